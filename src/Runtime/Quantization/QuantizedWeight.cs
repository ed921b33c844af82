using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PeftGen.Backends.Cpu;

namespace PeftGen.Quantization;

/// <summary>
/// A frozen weight matrix [out, in] stored in 4 bits per element (QLoRA's NF4 or FP4), in bitsandbytes' layout:
/// block-wise absmax scaling over the flattened row-major weight, two codes per byte, and optionally
/// double-quantized block scales. Immutable once built; safe to read from many threads.
/// </summary>
/// <remarks>
/// <para>Layout (bitsandbytes' <c>quantize_4bit</c>): element e (flat index row·Columns + col) belongs to block
/// e / <see cref="BlockSize"/>, so a block may span rows. Each block stores absmax = max |w| over its elements (the
/// last block may be partial), and each element the <see cref="Codebooks.Encode(float, QuantType)"/> code of
/// w · (1 / absmax). Codes are packed two per byte, the even element in the HIGH nibble; an odd count ends with a
/// spare low nibble holding the code of 0 scaled like the last block. Dequantization is code value · absmax.</para>
/// <para>Double quantization (bitsandbytes' <c>compress_statistics</c>) replaces the fp32 absmax per block by one
/// byte: offset = mean(absmax) (summed in double, rounded once to float32), then absmax − offset is quantized in
/// groups of <see cref="DoubleQuantBlockSize"/> blocks with the signed dynamic 8-bit map, one fp32 scale (the
/// group's max |absmax − offset|) per group. The block scale used is map[code] · scale + offset. Storage drops
/// from 4.5 to ≈ 4.127 bits per parameter at block size 64.</para>
/// </remarks>
public sealed unsafe class QuantizedWeight
{
    /// <summary>Smallest supported block size.</summary>
    public const int MinBlockSize = 32;

    /// <summary>Largest supported block size.</summary>
    public const int MaxBlockSize = 4096;

    /// <summary>Blocks per fp32 scale when double-quantized (bitsandbytes' nested block size).</summary>
    public const int DoubleQuantBlockSize = 256;

    // The signed dynamic map, copied once so the hot block-scale lookup indexes a plain array.
    private static readonly float[] s_absmaxMap = DynamicMap.Signed.ToArray();

    private readonly byte[] _packed;         // [(Count + 1) / 2] two codes per byte, even element in the high nibble
    private readonly float[] _absmax;        // [BlockCount] fp32 block scales; empty when double-quantized
    private readonly byte[] _absmaxCodes;    // [BlockCount] dynamic-map codes of absmax − offset; empty otherwise
    private readonly float[] _absmaxScales;  // [ceil(BlockCount / 256)] group scales; empty otherwise
    private readonly float[] _values;        // [16] the code book of Type
    // _packed and _values live on the pinned object heap; the kernels address them through these pointers.
    private readonly byte* _packedData;
    private readonly float* _valuesData;

    private QuantizedWeight(int rows, int columns, QuantType type, int blockSize,
        byte[] packed, float[] absmax, byte[] absmaxCodes, float[] absmaxScales, float absmaxOffset)
    {
        Rows = rows;
        Columns = columns;
        Type = type;
        BlockSize = blockSize;
        BlockShift = BitOperations.Log2((uint)blockSize);
        BlockCount = BlockCountOf((long)rows * columns, blockSize);
        _packed = packed;
        _absmax = absmax;
        _absmaxCodes = absmaxCodes;
        _absmaxScales = absmaxScales;
        AbsmaxOffset = absmaxOffset;
        _values = GC.AllocateArray<float>(16, pinned: true);
        Codebooks.Values(type).CopyTo(_values);
        _packedData = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_packed));
        _valuesData = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_values));
    }

    /// <summary>Output features: rows of the weight [out, in].</summary>
    public int Rows { get; }

    /// <summary>Input features: columns of the weight [out, in].</summary>
    public int Columns { get; }

    /// <summary>Number of weights, Rows × Columns.</summary>
    public long Count => (long)Rows * Columns;

    /// <summary>The 4-bit data type.</summary>
    public QuantType Type { get; }

    /// <summary>Consecutive elements (of the flattened weight) sharing one absmax: a power of two from 32 to 4096.</summary>
    public int BlockSize { get; }

    /// <summary>Number of absmax blocks, ceil(Count / BlockSize).</summary>
    public int BlockCount { get; }

    /// <summary>True when the block scales are double-quantized (8-bit codes + fp32 group scales + offset).</summary>
    public bool IsDoubleQuantized => _absmaxCodes.Length > 0;

    /// <summary>The packed codes, (Count + 1) / 2 bytes: element 2i in the high nibble of byte i, element 2i + 1 in the low one.</summary>
    internal ReadOnlySpan<byte> PackedCodes => _packed;

    /// <summary>The fp32 absmax of every block (bitsandbytes' <c>absmax</c>); empty when double-quantized.</summary>
    internal ReadOnlySpan<float> Absmax => _absmax;

    /// <summary>Double quantization: the signed dynamic-map code of each block's absmax − offset; empty otherwise.</summary>
    internal ReadOnlySpan<byte> AbsmaxCodes => _absmaxCodes;

    /// <summary>Double quantization: the fp32 scale of each group of 256 blocks (bitsandbytes' <c>nested_absmax</c>); empty otherwise.</summary>
    internal ReadOnlySpan<float> AbsmaxScales => _absmaxScales;

    /// <summary>Double quantization: mean of the original absmax values (bitsandbytes' <c>nested_offset</c>); 0 otherwise.</summary>
    internal float AbsmaxOffset { get; }

    /// <summary>
    /// Bytes of quantized storage: packed codes plus either the fp32 absmax values or, double-quantized, the 8-bit
    /// absmax codes, the fp32 group scales and the fp32 offset. The shared 16- and 256-entry code books are not counted.
    /// </summary>
    public long StorageBytes => _packed.Length + (IsDoubleQuantized
        ? _absmaxCodes.Length + sizeof(float) * ((long)_absmaxScales.Length + 1)
        : sizeof(float) * (long)_absmax.Length);

    /// <summary>Storage bits per weight: 4.5 at block size 64 without double quantization, ≈ 4.127 with it.</summary>
    public double BitsPerParameter => StorageBytes * 8.0 / Count;

    /// <summary>log2(BlockSize): block of flat element e is e &gt;&gt; BlockShift.</summary>
    internal int BlockShift { get; }

    /// <summary>The packed codes, pinned.</summary>
    internal byte* PackedData => _packedData;

    /// <summary>The 16 code book values, pinned.</summary>
    internal float* CodeValues => _valuesData;

    /// <summary>
    /// Quantizes <paramref name="weight"/> [rows, cols] (row-major) block-wise to 4 bits, exactly as bitsandbytes'
    /// <c>quantize_4bit(weight, blocksize, compress_statistics: doubleQuant, quant_type)</c> lays it out.
    /// </summary>
    /// <param name="weight">The weight, rows × cols finite values, row-major.</param>
    /// <param name="rows">Output features.</param>
    /// <param name="cols">Input features.</param>
    /// <param name="type">NF4 (QLoRA's default) or FP4.</param>
    /// <param name="blockSize">Elements per absmax block: a power of two from 32 to 4096 (bitsandbytes' default 64).</param>
    /// <param name="doubleQuant">Double-quantize the block scales (QLoRA's default).</param>
    /// <exception cref="ArgumentException">Bad shape, length, block size, or a non-finite weight.</exception>
    public static QuantizedWeight Quantize(ReadOnlySpan<float> weight, int rows, int cols, QuantType type, int blockSize = 64, bool doubleQuant = true)
    {
        long count = CheckShape(rows, cols, type, blockSize);
        if (weight.Length != count)
            throw new ArgumentException($"The weight holds {weight.Length} values; a [{rows}, {cols}] matrix needs {count}.", nameof(weight));
        var builder = new Builder(rows, cols, type, blockSize, count);
        fixed (float* w = weight) builder.Append(w, count);
        return builder.Build(doubleQuant);
    }

    /// <summary>
    /// Quantizes a weight [rows, cols] that is read in pieces, never whole: <paramref name="read"/> fills elements
    /// [first, first + destination.Length) of the flattened weight as float32, one chunk of at most
    /// <paramref name="chunkElements"/> at a time (a checkpoint tensor read from disk, widened from 16 bits). The result
    /// is bit-identical to <see cref="Quantize(ReadOnlySpan{float}, int, int, QuantType, int, bool)"/> of the whole weight:
    /// blocks never straddle chunks, and double quantization needs only the block scales, which are kept.
    /// </summary>
    /// <exception cref="ArgumentException">Bad shape or block size, or a non-finite weight.</exception>
    internal static QuantizedWeight Quantize(int rows, int cols, QuantType type, int blockSize, bool doubleQuant,
        WeightChunkReader read, int chunkElements = 1 << 20)
    {
        ArgumentNullException.ThrowIfNull(read);
        long count = CheckShape(rows, cols, type, blockSize);
        var builder = new Builder(rows, cols, type, blockSize, count);
        int chunk = (int)Math.Min(count, Math.Max(blockSize, chunkElements / blockSize * blockSize));
        // A tensor, so host-memory accounting (HostMemoryStats) sees the one full-precision buffer a streamed load holds.
        using var scratch = Tensors.Tensor.Create([chunk], Tensors.DType.Float32, zeroed: false, scoped: false); // [chunk] one piece, widened
        var w = scratch.AsSpan();
        for (long first = 0; first < count; first += chunk)
        {
            int n = (int)Math.Min(chunk, count - first);
            read(first, w[..n]);
            fixed (float* p = w) builder.Append(p, n);
        }
        return builder.Build(doubleQuant);
    }

    /// <summary>Fills <paramref name="destination"/> with elements [first, first + destination.Length) of a flattened weight.</summary>
    internal delegate void WeightChunkReader(long first, Span<float> destination);

    /// <summary>Packs a weight's codes and block scales piece by piece, in order (pieces start on block boundaries).</summary>
    private sealed class Builder(int rows, int cols, QuantType type, int blockSize, long count)
    {
        private readonly byte[] _packed = GC.AllocateUninitializedArray<byte>(checked((int)((count + 1) / 2)), pinned: true);
        private readonly float[] _absmax = new float[BlockCountOf(count, blockSize)];
        private long _done;

        /// <summary>Quantizes the next <paramref name="length"/> elements (a whole number of blocks unless it is the last piece).</summary>
        public void Append(float* w, long length)
        {
            int shift = BitOperations.Log2((uint)blockSize);
            long start = _done;
            int firstBlock = (int)(start >> shift), blocks = BlockCountOf(length, blockSize);
            long firstBad = long.MaxValue;
            fixed (byte* p = _packed)
            fixed (float* a = _absmax)
            {
                float* ap = a;
                byte* pp = p;
                CpuParallel.ForRange(blocks, Math.Max(1, 16384 >> shift), (b0, b1) =>
                {
                    for (int b = b0; b < b1; b++)
                    {
                        long offset = (long)b << shift;
                        int n = (int)Math.Min(blockSize, length - offset);
                        long bad = QuantizeBlock(w + offset, n, type, pp + ((start + offset) >> 1), out ap[firstBlock + b]);
                        if (bad >= 0) InterlockedMin(ref firstBad, offset + bad);
                    }
                });
            }
            if (firstBad != long.MaxValue)
            {
                long e = start + firstBad;
                throw new ArgumentException($"Weight [{e / cols}, {e % cols}] is {w[firstBad]}: 4-bit quantization needs finite values.", "weight");
            }
            _done += length;
        }

        public QuantizedWeight Build(bool doubleQuant)
        {
            if (_done != count) throw new InvalidOperationException($"Quantized {_done} of {count} weights.");
            if (!doubleQuant)
                return new QuantizedWeight(rows, cols, type, blockSize, _packed, _absmax, [], [], 0f);
            var (codes, scales, offset) = QuantizeAbsmax(_absmax);
            return new QuantizedWeight(rows, cols, type, blockSize, _packed, [], codes, scales, offset);
        }
    }

    /// <summary>
    /// Wraps existing 4-bit storage with fp32 block scales (bitsandbytes' <c>weight</c> bytes and <c>absmax</c>),
    /// copying it. Lengths must match the shape and block size.
    /// </summary>
    /// <param name="rows">Output features.</param>
    /// <param name="cols">Input features.</param>
    /// <param name="type">The data type the codes were made with.</param>
    /// <param name="blockSize">The block size the codes were made with.</param>
    /// <param name="packedCodes">(rows·cols + 1) / 2 bytes, even element in the high nibble.</param>
    /// <param name="absmax">ceil(rows·cols / blockSize) finite block scales.</param>
    /// <exception cref="ArgumentException">A length does not fit, or a scale is not finite.</exception>
    internal static QuantizedWeight FromStorage(int rows, int cols, QuantType type, int blockSize,
        ReadOnlySpan<byte> packedCodes, ReadOnlySpan<float> absmax)
    {
        long count = CheckShape(rows, cols, type, blockSize);
        int blocks = BlockCountOf(count, blockSize);
        var packed = CopyPacked(packedCodes, count);
        CheckLength(absmax.Length, blocks, nameof(absmax), $"one per block of {blockSize}");
        CheckFinite(absmax, nameof(absmax));
        return new QuantizedWeight(rows, cols, type, blockSize, packed, absmax.ToArray(), [], [], 0f);
    }

    /// <summary>
    /// Wraps existing double-quantized 4-bit storage (bitsandbytes' <c>weight</c>, <c>absmax</c> as uint8 codes,
    /// <c>nested_absmax</c>, <c>nested_offset</c>; nested block size 256 and the signed dynamic map), copying it.
    /// </summary>
    /// <param name="rows">Output features.</param>
    /// <param name="cols">Input features.</param>
    /// <param name="type">The data type the codes were made with.</param>
    /// <param name="blockSize">The block size the codes were made with.</param>
    /// <param name="packedCodes">(rows·cols + 1) / 2 bytes, even element in the high nibble.</param>
    /// <param name="absmaxCodes">One signed-dynamic-map code per block.</param>
    /// <param name="absmaxScales">One finite fp32 scale per group of 256 blocks.</param>
    /// <param name="absmaxOffset">The mean absmax added back after dequantizing the codes.</param>
    /// <exception cref="ArgumentException">A length does not fit, or a scale or the offset is not finite.</exception>
    internal static QuantizedWeight FromStorage(int rows, int cols, QuantType type, int blockSize,
        ReadOnlySpan<byte> packedCodes, ReadOnlySpan<byte> absmaxCodes, ReadOnlySpan<float> absmaxScales, float absmaxOffset)
    {
        long count = CheckShape(rows, cols, type, blockSize);
        int blocks = BlockCountOf(count, blockSize);
        var packed = CopyPacked(packedCodes, count);
        CheckLength(absmaxCodes.Length, blocks, nameof(absmaxCodes), $"one per block of {blockSize}");
        CheckLength(absmaxScales.Length, GroupCountOf(blocks), nameof(absmaxScales), $"one per {DoubleQuantBlockSize} blocks");
        CheckFinite(absmaxScales, nameof(absmaxScales));
        if (!float.IsFinite(absmaxOffset))
            throw new ArgumentException($"absmaxOffset is {absmaxOffset}; it must be finite.", nameof(absmaxOffset));
        return new QuantizedWeight(rows, cols, type, blockSize, packed, [], absmaxCodes.ToArray(), absmaxScales.ToArray(), absmaxOffset);
    }

    /// <summary>The scale dequantization multiplies block <paramref name="block"/>'s code values by (its absmax, after double quantization if any).</summary>
    internal float BlockScale(int block)
    {
        if ((uint)block >= (uint)BlockCount)
            throw new ArgumentOutOfRangeException(nameof(block), block, $"The weight has {BlockCount} blocks.");
        return BlockScaleUnchecked(block);
    }

    /// <summary>Writes the whole dequantized weight [Rows, Columns], row-major, into <paramref name="destination"/> (multi-threaded).</summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> holds fewer than <see cref="Count"/> floats.</exception>
    public void Dequantize(Span<float> destination)
    {
        CheckLength(destination.Length, Count, nameof(destination));
        fixed (float* d = destination)
        {
            float* dp = d;
            int cols = Columns;
            CpuParallel.ForRange(Rows, Math.Max(1, 32768 / cols), (r0, r1) =>
                DequantizeTile(r0, r1 - r0, 0, cols, dp + (long)r0 * cols, cols, NibbleDecoders.Best));
        }
    }

    /// <summary>
    /// Writes rows [firstRow, firstRow + rowCount) of the dequantized weight, [rowCount, Columns] row-major, into
    /// <paramref name="destination"/> on the calling thread: the building block of the fused kernels.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The row range is outside [0, Rows).</exception>
    /// <exception cref="ArgumentException"><paramref name="destination"/> holds fewer than rowCount × Columns floats.</exception>
    internal void DequantizeRows(int firstRow, int rowCount, Span<float> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(firstRow);
        ArgumentOutOfRangeException.ThrowIfNegative(rowCount);
        if (firstRow + (long)rowCount > Rows)
            throw new ArgumentOutOfRangeException(nameof(rowCount), rowCount, $"Rows {firstRow}..{firstRow + (long)rowCount - 1} do not exist; the weight has {Rows}.");
        CheckLength(destination.Length, (long)rowCount * Columns, nameof(destination));
        fixed (float* d = destination) DequantizeTile(firstRow, rowCount, 0, Columns, d, Columns, NibbleDecoders.Best);
    }

    /// <summary>
    /// Dequantizes the tile rows [firstRow, +rowCount) × columns [firstCol, +colCount) into dst with row stride ldd.
    /// Each row is walked in runs that stay inside one block, so every run has a single scale.
    /// </summary>
    internal void DequantizeTile(int firstRow, int rowCount, int firstCol, int colCount, float* dst, int ldd, NibbleDecoder decoder)
    {
        for (int r = 0; r < rowCount; r++)
        {
            long e = (long)(firstRow + r) * Columns + firstCol, end = e + colCount;
            float* d = dst + (long)r * ldd;
            while (e < end)
            {
                int block = (int)(e >> BlockShift);
                int n = (int)(Math.Min(end, (long)(block + 1) << BlockShift) - e);
                DecodeRun(e, n, BlockScaleUnchecked(block), d, decoder);
                d += n;
                e += n;
            }
        }
    }

    /// <summary>Block scale without the range check; bitsandbytes' order of operations (no fused multiply-add).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal float BlockScaleUnchecked(int block) => _absmaxCodes.Length == 0
        ? _absmax[block]
        : s_absmaxMap[_absmaxCodes[block]] * _absmaxScales[block / DoubleQuantBlockSize] + AbsmaxOffset;

    /// <summary>dst[i] = value(code of element first + i) · scale for i in [0, count); all in one block.</summary>
    private void DecodeRun(long first, int count, float scale, float* dst, NibbleDecoder decoder)
    {
        float* lut = _valuesData;
        int i = 0;
        if ((first & 1) != 0)
        {
            // An odd element is the low nibble of its byte; after it, elements pair up with whole bytes.
            dst[0] = lut[_packedData[first >> 1] & 0xF] * scale;
            i = 1;
        }
        byte* p = _packedData + ((first + i) >> 1);
        if (decoder == NibbleDecoder.Avx512)
        {
            var table = Vector512.Load(lut);
            var s = Vector512.Create(scale);
            for (; i + 32 <= count; i += 32, p += 16)
            {
                NibbleLookup.Lookup32(p, table, out var v0, out var v1);
                (v0 * s).Store(dst + i);
                (v1 * s).Store(dst + i + 16);
            }
            for (; i + 16 <= count; i += 16, p += 8)
                (NibbleLookup.Lookup16(p, table) * s).Store(dst + i);
        }
        else if (decoder == NibbleDecoder.Avx2)
        {
            var low = Vector256.Load(lut);
            var high = Vector256.Load(lut + 8);
            var s = Vector256.Create(scale);
            for (; i + 32 <= count; i += 32, p += 16)
            {
                NibbleLookup.Lookup32(p, low, high, out var v0, out var v1, out var v2, out var v3);
                (v0 * s).Store(dst + i);
                (v1 * s).Store(dst + i + 8);
                (v2 * s).Store(dst + i + 16);
                (v3 * s).Store(dst + i + 24);
            }
        }
        for (; i + 2 <= count; i += 2, p++)
        {
            dst[i] = lut[*p >> 4] * scale;
            dst[i + 1] = lut[*p & 0xF] * scale;
        }
        if (i < count) dst[i] = lut[*p >> 4] * scale;
    }

    /// <summary>
    /// Finds the block's absmax, then packs its codes (pairs from the block start, which is even because block
    /// sizes are). Returns the offset of the first non-finite value, or -1.
    /// </summary>
    private static long QuantizeBlock(float* w, int length, QuantType type, byte* packed, out float absmax)
    {
        float max = 0f;
        for (int i = 0; i < length; i++)
        {
            float v = w[i];
            if (!float.IsFinite(v))
            {
                absmax = float.NaN;
                return i;
            }
            max = MathF.Max(max, MathF.Abs(v));
        }
        absmax = max;
        // bitsandbytes multiplies by the reciprocal; an all-zero block gives 0 · ∞ = NaN, which encodes to code 0.
        float inv = 1f / max;
        int pairs = length / 2;
        if (type == QuantType.NF4)
        {
            for (int j = 0; j < pairs; j++)
                packed[j] = (byte)(Codebooks.EncodeNF4(w[2 * j] * inv) << 4 | Codebooks.EncodeNF4(w[2 * j + 1] * inv));
        }
        else
        {
            for (int j = 0; j < pairs; j++)
                packed[j] = (byte)(Codebooks.EncodeFP4(w[2 * j] * inv) << 4 | Codebooks.EncodeFP4(w[2 * j + 1] * inv));
        }
        // Odd length (only the last block of an odd count): the spare low nibble encodes a zero, like bitsandbytes' zero-padded load.
        if ((length & 1) != 0)
            packed[pairs] = (byte)(Codebooks.Encode(w[length - 1] * inv, type) << 4 | Codebooks.Encode(0f * inv, type));
        return -1;
    }

    /// <summary>Double quantization of the block scales: (codes, group scales, offset).</summary>
    private static (byte[] Codes, float[] Scales, float Offset) QuantizeAbsmax(float[] absmax)
    {
        double sum = 0;
        foreach (float a in absmax) sum += a;
        float offset = (float)(sum / absmax.Length);
        var codes = new byte[absmax.Length];
        var scales = new float[GroupCountOf(absmax.Length)];
        var map = DynamicMap.Signed;
        for (int g = 0; g < scales.Length; g++)
        {
            int start = g * DoubleQuantBlockSize, end = Math.Min(start + DoubleQuantBlockSize, absmax.Length);
            float max = 0f;
            for (int b = start; b < end; b++) max = MathF.Max(max, MathF.Abs(absmax[b] - offset));
            scales[g] = max;
            // As in bitsandbytes, x · (1 / max); a group of all-equal scales gives NaN, encoded as code 0. Nearest
            // code with float32 midpoints, like bitsandbytes' dQuantize; only a value exactly on a midpoint can differ
            // (DynamicMap breaks that tie toward the smaller magnitude, dQuantize toward the even index).
            float inv = 1f / max;
            for (int b = start; b < end; b++) codes[b] = DynamicMap.Encode((absmax[b] - offset) * inv, map);
        }
        return (codes, scales, offset);
    }

    private static long CheckShape(int rows, int cols, QuantType type, int blockSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(cols, 1);
        if (type is not (QuantType.NF4 or QuantType.FP4))
            throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown 4-bit quantization type.");
        if (blockSize < MinBlockSize || blockSize > MaxBlockSize || !BitOperations.IsPow2(blockSize))
            throw new ArgumentException(
                $"Block size {blockSize} is not supported: use a power of two from {MinBlockSize} to {MaxBlockSize} (64 is bitsandbytes' default).",
                nameof(blockSize));
        long count = (long)rows * cols;
        if ((count + 1) / 2 > Array.MaxLength)
            throw new ArgumentException($"A [{rows}, {cols}] weight is too large: its packed codes exceed one array ({Array.MaxLength} bytes).");
        return count;
    }

    private static byte[] CopyPacked(ReadOnlySpan<byte> packedCodes, long count)
    {
        CheckLength(packedCodes.Length, (count + 1) / 2, nameof(packedCodes), "two codes per byte");
        var packed = GC.AllocateUninitializedArray<byte>(packedCodes.Length, pinned: true);
        packedCodes.CopyTo(packed);
        return packed;
    }

    private static void CheckLength(int actual, long expected, string name, string why)
    {
        if (actual != expected)
            throw new ArgumentException($"{name} holds {actual} values; this weight needs {expected} ({why}).", name);
    }

    private static void CheckLength(int actual, long needed, string name)
    {
        if (actual < needed)
            throw new ArgumentException($"{name} holds {actual} floats; at least {needed} are needed.", name);
    }

    private static void CheckFinite(ReadOnlySpan<float> values, string name)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new ArgumentException($"{name}[{i}] is {values[i]}; block scales must be finite.", name);
    }

    private static int BlockCountOf(long count, int blockSize) => checked((int)((count + blockSize - 1) / blockSize));

    private static int GroupCountOf(int blocks) => (blocks + DoubleQuantBlockSize - 1) / DoubleQuantBlockSize;

    private static void InterlockedMin(ref long target, long value)
    {
        long current = Volatile.Read(ref target);
        while (value < current)
        {
            long seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current) return;
            current = seen;
        }
    }
}

/// <summary>The instruction set a 4-bit decode runs on; tests pick each one explicitly.</summary>
internal enum NibbleDecoder
{
    /// <summary>Scalar table lookups; runs everywhere.</summary>
    Scalar,

    /// <summary>AVX2: two 8-entry permutes and a blend per 8 codes.</summary>
    Avx2,

    /// <summary>AVX-512F: one 16-entry permute (vpermps) per 16 codes.</summary>
    Avx512,
}

/// <summary>Choosing and checking a <see cref="NibbleDecoder"/>.</summary>
internal static class NibbleDecoders
{
    /// <summary>The fastest decoder this CPU runs.</summary>
    public static NibbleDecoder Best { get; } =
        Avx512F.IsSupported ? NibbleDecoder.Avx512 : Avx2.IsSupported ? NibbleDecoder.Avx2 : NibbleDecoder.Scalar;

    /// <summary>Whether <paramref name="decoder"/> can run on this CPU.</summary>
    public static bool IsSupported(NibbleDecoder decoder) => decoder switch
    {
        NibbleDecoder.Avx512 => Avx512F.IsSupported,
        NibbleDecoder.Avx2 => Avx2.IsSupported,
        _ => true,
    };
}

/// <summary>
/// Turns packed 4-bit codes into their code-book values with SIMD permutes: the 16 code values sit in a register
/// (AVX-512) or two (AVX2) and the codes index into them. Codes come out in element order: high nibble, then low.
/// </summary>
internal static unsafe class NibbleLookup
{
    /// <summary>Values of the 32 codes in bytes p[0..15] (AVX-512F).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Lookup32(byte* p, Vector512<float> table, out Vector512<float> first, out Vector512<float> second)
    {
        Split(Vector128.Load(p), out var codes0, out var codes1);
        first = Avx512F.PermuteVar16x32(table, Avx512F.ConvertToVector512Int32(codes0));
        second = Avx512F.PermuteVar16x32(table, Avx512F.ConvertToVector512Int32(codes1));
    }

    /// <summary>Values of the 16 codes in bytes p[0..7] (AVX-512F).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Lookup16(byte* p, Vector512<float> table)
    {
        Split(Vector128.CreateScalar(*(ulong*)p).AsByte(), out var codes, out _);
        return Avx512F.PermuteVar16x32(table, Avx512F.ConvertToVector512Int32(codes));
    }

    /// <summary>Values of the 32 codes in bytes p[0..15] (AVX2); the table is split into codes 0..7 and 8..15.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Lookup32(byte* p, Vector256<float> low, Vector256<float> high,
        out Vector256<float> v0, out Vector256<float> v1, out Vector256<float> v2, out Vector256<float> v3)
    {
        Split(Vector128.Load(p), out var codes0, out var codes1);
        v0 = Lookup8(codes0, low, high);
        v1 = Lookup8(Sse2.ShiftRightLogical128BitLane(codes0, 8), low, high);
        v2 = Lookup8(codes1, low, high);
        v3 = Lookup8(Sse2.ShiftRightLogical128BitLane(codes1, 8), low, high);
    }

    /// <summary>Values of the codes in the low 8 bytes of <paramref name="codes"/> (one code per byte).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Lookup8(Vector128<byte> codes, Vector256<float> low, Vector256<float> high)
    {
        var index = Avx2.ConvertToVector256Int32(codes);
        // vpermps reads only the low 3 bits of each index; bit 3 picks the table half, moved to the sign bit for the blend.
        return Avx.BlendVariable(Avx2.PermuteVar8x32(low, index), Avx2.PermuteVar8x32(high, index),
            Avx2.ShiftLeftLogical(index, 28).AsSingle());
    }

    /// <summary>Packed bytes → one code per byte: codes of elements 0..15 and 16..31.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Split(Vector128<byte> packed, out Vector128<byte> first, out Vector128<byte> second)
    {
        var mask = Vector128.Create((byte)0xF);
        var high = Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & mask;
        var low = packed & mask;
        first = Sse2.UnpackLow(high, low);
        second = Sse2.UnpackHigh(high, low);
    }
}
