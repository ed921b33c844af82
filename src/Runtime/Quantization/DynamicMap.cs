using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PeftGen.Quantization;

/// <summary>
/// bitsandbytes' "dynamic" 8-bit data type (<c>create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)</c>,
/// after Dettmers, "8-Bit Approximations for Parallelism in Deep Learning"): 256 values in [-1, 1] whose spacing
/// shrinks with magnitude, covering seven decades (1e-7 … 1) so block-normalised optimizer moments, which span
/// many orders of magnitude inside one block, keep their small entries. Used by the 8-bit optimizers and by
/// double quantization of 4-bit block scales.
/// </summary>
/// <remarks>
/// Construction, in bitsandbytes' float32 torch arithmetic: for every exponent e in 0..6, the interval [0.1, 1] is cut
/// by <c>torch.linspace(0.1, 1, k + 1)</c> into k equal parts (k = 2^e for the signed map, 2^(e+1) for the
/// unsigned one) and the midpoint of each part, times 10^(e−6), is a value (and its negation, for the signed
/// map). 0 and 1 are added and the list is sorted ascending. So:
/// <list type="bullet">
/// <item>Signed: 127 negative values, 0 at index 127, 127 positive values, and 1 at index 255. The smallest value
/// is ≈ −0.992969 (the mirror of the largest midpoint), not −1: bitsandbytes adds +1 only. Apart from that top
/// entry the map is symmetric: <c>Signed[i] == −Signed[254 − i]</c>.</item>
/// <item>Unsigned (for non-negative data such as Adam's second moment): 0 at index 0, 254 midpoints, 1 at index
/// 255; each decade gets twice the signed map's resolution because no bit is spent on a sign.</item>
/// </list>
/// bitsandbytes' 8-bit Adam quantizes the first moment with the signed map and the second moment with the
/// unsigned one (<c>Optimizer8bit.fill_qmap</c>: <c>qmap1 = dynamic</c>, <c>qmap2 = udynamic</c>).
/// </remarks>
internal static class DynamicMap
{
    /// <summary>Number of codes (8 bits).</summary>
    public const int Size = 256;

    /// <summary>Index of 0 in <see cref="Signed"/>.</summary>
    public const byte SignedZeroCode = 127;

    /// <summary>Exponent bits: the map spans this many decades below 1.</summary>
    private const int MaxExponentBits = 7;

    // 10^(e−6) as float32: Python evaluates 10 ** (e − 6) as a double and torch multiplies a float32 tensor by it
    // in float32, so the factor is the double rounded to float32.
    private static readonly double[] s_decades = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];

    private static readonly float[] s_signed = Create(signed: true);
    private static readonly float[] s_unsigned = Create(signed: false);
    private static readonly TableEncoder s_signedEncoder = new(s_signed);
    private static readonly TableEncoder s_unsignedEncoder = new(s_unsigned);

    /// <summary>The signed map: 256 strictly ascending values from ≈ −0.992969 to 1, with 0 at index 127.</summary>
    public static ReadOnlySpan<float> Signed => s_signed;

    /// <summary>The unsigned map: 256 strictly ascending values from 0 to 1.</summary>
    public static ReadOnlySpan<float> Unsigned => s_unsigned;

    /// <summary>
    /// The index of the map value nearest to <paramref name="normalized"/>, which is first clamped to [-1, 1].
    /// The decision boundary between neighbours a &lt; b is their float32 midpoint (a + b)·0.5, as in
    /// bitsandbytes' kernels; a value exactly on a midpoint goes to the neighbour of smaller magnitude, which makes
    /// encoding symmetric under negation on the signed map (bitsandbytes resolves such ties by where its binary
    /// search happened to stop). Values below the map's first entry give index 0;
    /// NaN gives index 0. <see cref="Signed"/> and <see cref="Unsigned"/> themselves are encoded through a lookup
    /// table (a few nanoseconds); any other map, including a copy of them, by binary search, with identical results.
    /// </summary>
    /// <param name="normalized">A value divided by its block's absolute maximum.</param>
    /// <param name="map">A strictly ascending map of 256 values (<see cref="Signed"/> or <see cref="Unsigned"/>).</param>
    public static byte Encode(float normalized, ReadOnlySpan<float> map) =>
        TableFor(map) is { } table ? table.Encode(normalized) : EncodeBySearch(normalized, map);

    private static byte EncodeBySearch(float normalized, ReadOnlySpan<float> map)
    {
        float x = Math.Clamp(normalized, -1f, 1f);
        // Lower bound: the first index whose value is ≥ x (map.Length when none is).
        int lo = 0, hi = map.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >> 1;
            if (map[mid] < x) lo = mid + 1;
            else hi = mid;
        }
        if (lo == 0) return 0;
        if (lo == map.Length) return (byte)(map.Length - 1);
        float below = map[lo - 1], above = map[lo];
        float midpoint = (below + above) * 0.5f;
        if (x > midpoint) return (byte)lo;
        if (x < midpoint) return (byte)(lo - 1);
        return (byte)(MathF.Abs(below) <= MathF.Abs(above) ? lo - 1 : lo);
    }

    /// <summary>
    /// Block-wise quantization: for every block of <paramref name="blockSize"/> consecutive elements (the last may
    /// be shorter), stores the block's absolute maximum in <paramref name="absmax"/> and each element's
    /// <see cref="Encode"/> of x / absmax in <paramref name="codes"/>. An all-zero block gets absmax 0 and the code
    /// of the map's value nearest 0.
    /// </summary>
    /// <param name="x">Values to quantize, [n].</param>
    /// <param name="codes">Output codes, [n].</param>
    /// <param name="absmax">Output block scales, [ceil(n / blockSize)].</param>
    /// <param name="blockSize">Elements per block (&gt; 0).</param>
    /// <param name="map">The 256-value code book.</param>
    /// <exception cref="ArgumentException">A buffer length does not fit <paramref name="x"/> and the block size.</exception>
    public static void QuantizeBlockwise(ReadOnlySpan<float> x, Span<byte> codes, Span<float> absmax, int blockSize, ReadOnlySpan<float> map)
    {
        int blocks = CheckBlockwise(x.Length, codes.Length, absmax.Length, blockSize, map);
        for (int b = 0; b < blocks; b++)
        {
            int start = b * blockSize;
            int length = Math.Min(blockSize, x.Length - start);
            absmax[b] = QuantizeBlock(x.Slice(start, length), codes.Slice(start, length), map);
        }
    }

    /// <summary>Inverse of <see cref="QuantizeBlockwise"/>: x = map[code] · absmax of the element's block.</summary>
    /// <param name="codes">Codes, [n].</param>
    /// <param name="absmax">Block scales, [ceil(n / blockSize)].</param>
    /// <param name="x">Output values, [n].</param>
    /// <param name="blockSize">Elements per block (&gt; 0).</param>
    /// <param name="map">The 256-value code book the codes were made with.</param>
    /// <exception cref="ArgumentException">A buffer length does not fit <paramref name="x"/> and the block size.</exception>
    public static void DequantizeBlockwise(ReadOnlySpan<byte> codes, ReadOnlySpan<float> absmax, Span<float> x, int blockSize, ReadOnlySpan<float> map)
    {
        int blocks = CheckBlockwise(x.Length, codes.Length, absmax.Length, blockSize, map);
        for (int b = 0; b < blocks; b++)
        {
            int start = b * blockSize;
            int length = Math.Min(blockSize, x.Length - start);
            DequantizeBlock(codes.Slice(start, length), absmax[b], x.Slice(start, length), map);
        }
    }

    /// <summary>Quantizes one block against its own absolute maximum, which it returns.</summary>
    /// <param name="x">The block's values, [length].</param>
    /// <param name="codes">Output codes, [length].</param>
    /// <param name="map">The 256-value code book.</param>
    /// <exception cref="ArgumentException"><paramref name="codes"/> is shorter than <paramref name="x"/>.</exception>
    public static float QuantizeBlock(ReadOnlySpan<float> x, Span<byte> codes, ReadOnlySpan<float> map)
    {
        if (codes.Length < x.Length) throw new ArgumentException($"codes holds {codes.Length} bytes for {x.Length} values.", nameof(codes));
        float max = 0f;
        foreach (float v in x) max = MathF.Max(max, MathF.Abs(v));
        if (max == 0f)
        {
            codes.Slice(0, x.Length).Fill(Encode(0f, map));
            return 0f;
        }
        if (TableFor(map) is { } table)
            for (int i = 0; i < x.Length; i++) codes[i] = table.Encode(x[i] / max);
        else
            for (int i = 0; i < x.Length; i++) codes[i] = EncodeBySearch(x[i] / max, map);
        return max;
    }

    /// <summary>Dequantizes one block: x[i] = map[codes[i]] · absmax.</summary>
    /// <param name="codes">The block's codes, [length].</param>
    /// <param name="absmax">The block's scale.</param>
    /// <param name="x">Output values, [length].</param>
    /// <param name="map">The 256-value code book.</param>
    /// <exception cref="ArgumentException"><paramref name="x"/> is shorter than <paramref name="codes"/>.</exception>
    public static void DequantizeBlock(ReadOnlySpan<byte> codes, float absmax, Span<float> x, ReadOnlySpan<float> map)
    {
        if (x.Length < codes.Length) throw new ArgumentException($"x holds {x.Length} values for {codes.Length} codes.", nameof(x));
        for (int i = 0; i < codes.Length; i++) x[i] = map[codes[i]] * absmax;
    }

    /// <summary>Number of blocks of <paramref name="blockSize"/> covering <paramref name="count"/> elements.</summary>
    public static int BlockCount(long count, int blockSize) => checked((int)((count + blockSize - 1) / blockSize));

    private static int CheckBlockwise(int count, int codes, int absmax, int blockSize, ReadOnlySpan<float> map)
    {
        if (blockSize <= 0) throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "must be > 0");
        if (map.Length != Size) throw new ArgumentException($"The map has {map.Length} values; an 8-bit map has {Size}.", nameof(map));
        if (codes != count) throw new ArgumentException($"codes holds {codes} bytes for {count} values.", nameof(codes));
        int blocks = BlockCount(count, blockSize);
        if (absmax != blocks)
            throw new ArgumentException($"absmax holds {absmax} scales; {count} values in blocks of {blockSize} need {blocks}.", nameof(absmax));
        return blocks;
    }

    /// <summary>The lookup-table encoder when <paramref name="map"/> is one of the two built-in maps.</summary>
    private static TableEncoder? TableFor(ReadOnlySpan<float> map)
    {
        if (map.Length != Size) return null;
        ref float first = ref MemoryMarshal.GetReference(map);
        if (Unsafe.AreSame(ref first, ref MemoryMarshal.GetArrayDataReference(s_signed))) return s_signedEncoder;
        if (Unsafe.AreSame(ref first, ref MemoryMarshal.GetArrayDataReference(s_unsigned))) return s_unsignedEncoder;
        return null;
    }

    /// <summary>
    /// <see cref="Encode"/> for one fixed map without a search. Floats, ordered by value, are cut into 65,536
    /// buckets by the top 16 bits of an order-preserving integer key (sign, exponent, 7 mantissa bits); the table
    /// holds the code of each bucket's smallest value. Codes only grow with the value and no bucket of the built-in
    /// maps holds more than one decision boundary (checked on construction), so the code of any x is its bucket's
    /// start code plus one comparison.
    /// </summary>
    private sealed class TableEncoder
    {
        // [256] x encodes above code j exactly when x > _thresholds[j]: the midpoint of codes j and j + 1, or the
        // float just below it where a tie goes up; +∞ after the last code.
        private readonly float[] _thresholds = new float[Size];
        private readonly byte[] _bucketStart = new byte[1 << 16]; // [65536] code of each bucket's smallest value

        public TableEncoder(float[] map)
        {
            for (int j = 0; j < Size - 1; j++)
            {
                float midpoint = (map[j] + map[j + 1]) * 0.5f;
                bool tieUp = MathF.Abs(map[j + 1]) < MathF.Abs(map[j]);
                _thresholds[j] = tieUp ? MathF.BitDecrement(midpoint) : midpoint;
            }
            _thresholds[Size - 1] = float.PositiveInfinity;
            for (int bucket = 0; bucket < _bucketStart.Length; bucket++)
            {
                uint first = (uint)bucket << 16;
                byte startCode = EncodeBySearch(FromKey(first), map);
                byte endCode = EncodeBySearch(FromKey(first | 0xFFFF), map);
                if (endCode > startCode + 1)
                    throw new InvalidOperationException($"Bucket {bucket} of the dynamic map spans codes {startCode}..{endCode}; the table encoder resolves one boundary per bucket.");
                _bucketStart[bucket] = startCode;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public byte Encode(float x)
        {
            // No clamp needed: the table was built from clamped values, so buckets beyond ±1 start at the end codes
            // and the +∞ threshold keeps 255 there. NaN is tested because a few NaN payloads share +∞'s bucket.
            if (float.IsNaN(x)) return 0;
            int code = _bucketStart[Key(x) >> 16];
            return (byte)(code + (x > _thresholds[code] ? 1 : 0));
        }

        /// <summary>An unsigned key that orders like the float: negatives have every bit flipped, positives the sign bit.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static uint Key(float x)
        {
            uint bits = BitConverter.SingleToUInt32Bits(x);
            // Branch-free: moment signs are random, and a mispredicted branch here costs more than the rest of Encode.
            return bits ^ ((uint)((int)bits >> 31) | 0x8000_0000u);
        }

        private static float FromKey(uint key) =>
            BitConverter.UInt32BitsToSingle((key & 0x8000_0000u) != 0 ? key & 0x7FFF_FFFFu : ~key);
    }

    private static float[] Create(bool signed)
    {
        var values = new List<float>(Size);
        for (int e = 0; e < MaxExponentBits; e++)
        {
            int parts = signed ? 1 << e : 2 << e;
            float decade = (float)s_decades[e];
            for (int k = 0; k < parts; k++)
            {
                float midpoint = (TorchLinspace(0.1f, 1f, parts + 1, k) + TorchLinspace(0.1f, 1f, parts + 1, k + 1)) / 2f;
                float value = midpoint * decade;
                values.Add(value);
                if (signed) values.Add(-value);
            }
        }
        values.Add(0f);
        values.Add(1f);
        if (values.Count != Size) throw new InvalidOperationException($"The dynamic map came out with {values.Count} values instead of {Size}.");
        values.Sort();
        return values.ToArray();
    }

    /// <summary>
    /// Element <paramref name="index"/> of float32 <c>torch.linspace(start, end, steps)</c> on the CPU as PyTorch
    /// 2.x computes it: the first half counts up from start, the second half down from end, one element at a time,
    /// each as a fused multiply-add (the kernel is built with FMA contraction: PyTorch 1.13's scalar path, which is
    /// the same expression, reproduces bit for bit only with it).
    /// </summary>
    /// <remarks>
    /// PyTorch before 2.0 vectorized the full 16-element chunks (a base plus j·step, unfused), which moves 42 of
    /// the 256 signed values by one or two float32 ulps (≤ 6e-8); bitsandbytes builds its map with whichever PyTorch
    /// is installed.
    /// </remarks>
    private static float TorchLinspace(float start, float end, int steps, int index)
    {
        float step = (end - start) / (steps - 1);
        return index < steps / 2
            ? MathF.FusedMultiplyAdd(step, index, start)
            : MathF.FusedMultiplyAdd(-step, steps - index - 1, end);
    }
}
