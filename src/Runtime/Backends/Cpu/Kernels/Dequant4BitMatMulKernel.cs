using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using PeftGen.Quantization;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// Matrix products with a frozen 4-bit weight W [out, in] that never materialise W in float: the forward
/// y = x·Wᵀ and the input gradient dx = dy·W dequantize one tile of W at a time into a per-thread scratch buffer
/// (at most <see cref="TileFloats"/> floats, so memory stays bounded however large W is) and run
/// <see cref="Sgemm"/> on it. A single row of x (token-by-token generation) takes a fused dequantize-dot GEMV
/// instead, which reads 4 bits per weight and never writes a dequantized value; a single row of dy takes the
/// transposed GEMV, decoding one row slice at a time into L1.
/// </summary>
/// <remarks>
/// Tiles span <see cref="DepthBlock"/> along the GEMM's reduction dimension, the depth Sgemm itself blocks by, so
/// a tiled product makes no more passes over its output than one big SGEMM would; across the other dimension a
/// tile takes as many rows or columns as the budget allows, because every extra tile there re-packs the
/// activations. Threads: the tile decode is split across threads by rows, and each SGEMM threads itself. (Running
/// tiles on separate threads would need a single-threaded SGEMM per tile, and each would re-pack all of x.)
/// </remarks>
internal static unsafe class Dequant4BitMatMulKernel
{
    /// <summary>
    /// Dequantized floats per tile: 512 KiB, half of a 1 MiB L2. Measured on x [2048, 288] · W [768, 288]ᵀ with two
    /// threads: tiles capped at 64 or 128 rows cost 13–18% over float SGEMM (each re-packs x), 256 rows 1–4%,
    /// this budget (two tiles of 384 rows) 1–3%, and a 1 MiB budget (the whole of that W) nothing measurable.
    /// </summary>
    internal const int TileFloats = 1 << 17;

    // Sgemm's depth blocking (its KC and KcSplit): a depth up to 384 is one block, deeper ones split into ~256.
    private const int SgemmDepth = 384;
    private const int SgemmDepthSplit = 256;

    /// <summary>Tile rows/columns across the output are multiples of this (Sgemm's AVX-512 microkernel width).</summary>
    private const int TileGranule = 32;

    /// <summary>Least work (floats) worth a thread for the tile decode and the GEMVs.</summary>
    private const int MinFloatsPerThread = 32768;

    /// <summary>Most dx columns one thread of the transposed GEMV owns: 8 KiB of dx plus 8 KiB of decoded row, in L1.</summary>
    private const int MaxGemvChunk = 2048;

    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>y [rows, out] = x [rows, in] · dequant(W)ᵀ.</summary>
    public static void Forward(float* x, QuantizedWeight weight, float* y, int rows)
    {
        if (rows == 1) Gemv(x, weight, y, NibbleDecoders.Best);
        else ForwardTiled(x, weight, y, rows);
    }

    /// <summary>dx [rows, in] (+)= dy [rows, out] · dequant(W); accumulate adds into dx.</summary>
    public static void BackwardInput(float* dy, QuantizedWeight weight, float* dx, int rows, bool accumulate)
    {
        if (rows == 1) GemvTransposed(dy, weight, dx, accumulate, NibbleDecoders.Best);
        else BackwardTiled(dy, weight, dx, rows, accumulate);
    }

    /// <summary>The input gradient through dequantized tiles and SGEMM, for any number of rows (the GEMM path).</summary>
    internal static void BackwardTiled(float* dy, QuantizedWeight weight, float* dx, int rows, bool accumulate)
    {
        if (rows == 0) return;
        int outF = weight.Rows, inF = weight.Columns;
        // Depth = W's rows (out); tiles W[o0..o0+kb, i0..i0+nb] are [kb, nb] row-major, used as op(B) directly.
        int kb = DepthBlock(outF);
        int nb = AcrossBlock(inF, kb);
        float* tile = Scratch(kb * nb);
        for (int i0 = 0; i0 < inF; i0 += nb)
        {
            int n = Math.Min(nb, inF - i0);
            for (int o0 = 0; o0 < outF; o0 += kb)
            {
                int k = Math.Min(kb, outF - o0);
                DequantizeTile(weight, o0, k, i0, n, tile, n);
                float beta = o0 == 0 && !accumulate ? 0f : 1f;
                Sgemm.Multiply(false, false, rows, n, k, 1f, dy + o0, outF, tile, n, beta, dx + i0, inF);
            }
        }
    }

    /// <summary>The forward through dequantized tiles and SGEMM, for any number of rows (the GEMM path).</summary>
    internal static void ForwardTiled(float* x, QuantizedWeight weight, float* y, int rows)
    {
        if (rows == 0) return;
        int outF = weight.Rows, inF = weight.Columns;
        // Depth = W's columns (in); tiles W[o0..o0+nb, i0..i0+kb] are [nb, kb] row-major, used as op(B) = tileᵀ.
        int kb = DepthBlock(inF);
        int nb = AcrossBlock(outF, kb);
        float* tile = Scratch(nb * kb);
        for (int o0 = 0; o0 < outF; o0 += nb)
        {
            int n = Math.Min(nb, outF - o0);
            for (int i0 = 0; i0 < inF; i0 += kb)
            {
                int k = Math.Min(kb, inF - i0);
                DequantizeTile(weight, o0, n, i0, k, tile, k);
                Sgemm.Multiply(false, true, rows, n, k, 1f, x + i0, inF, tile, k, i0 == 0 ? 0f : 1f, y + o0, outF);
            }
        }
    }

    /// <summary>
    /// y [out] = dequant(W) · x [in] for one row of x, fused: each weight row is decoded in registers and
    /// dotted with x block by block (Σ over blocks of scale · Σ code value · x), split across threads by rows.
    /// </summary>
    internal static void Gemv(float* x, QuantizedWeight weight, float* y, NibbleDecoder decoder)
    {
        int cols = weight.Columns;
        CpuParallel.ForRange(weight.Rows, Math.Max(1, MinFloatsPerThread / cols), (r0, r1) =>
        {
            for (int r = r0; r < r1; r++) y[r] = DotRow(weight, r, x, decoder);
        });
    }

    /// <summary>
    /// dx [in] (+)= dy [out] · dequant(W) for one row of dy: each thread owns a range of dx's columns, keeps it in
    /// L1 and adds dy[o] times every weight row's slice, decoded into a small stack buffer.
    /// </summary>
    internal static void GemvTransposed(float* dy, QuantizedWeight weight, float* dx, bool accumulate, NibbleDecoder decoder)
    {
        int outF = weight.Rows, inF = weight.Columns;
        int threads = (int)Math.Clamp(weight.Count / MinFloatsPerThread, 1, CpuParallel.MaxThreads);
        int chunk = Math.Clamp(CeilDiv(CeilDiv(inF, threads), 16) * 16, 16, MaxGemvChunk);
        CpuParallel.For(CeilDiv(inF, chunk), c =>
        {
            int c0 = c * chunk, n = Math.Min(chunk, inF - c0);
            float* row = stackalloc float[MaxGemvChunk];                                   // [n] W[o, c0..c0+n]
            var slice = new Span<float>(dx + c0, n);                                        // [n] dx[c0..c0+n]
            if (!accumulate) slice.Clear();
            for (int o = 0; o < outF; o++)
            {
                weight.DequantizeTile(o, 1, c0, n, row, n, decoder);
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(row, n), dy[o], slice, slice);
            }
        });
    }

    /// <summary>Σ_c dequant(W)[row, c] · x[c].</summary>
    internal static float DotRow(QuantizedWeight weight, int row, float* x, NibbleDecoder decoder)
    {
        byte* packed = weight.PackedData;
        float* lut = weight.CodeValues;
        int shift = weight.BlockShift;
        long e = (long)row * weight.Columns, end = e + weight.Columns;
        float* xr = x;
        float total = 0f;
        var acc512 = Vector512<float>.Zero;
        var acc256 = Vector256<float>.Zero;
        while (e < end)
        {
            // One run: the row's elements inside a single block, so one scale multiplies the whole partial dot.
            int block = (int)(e >> shift);
            int n = (int)(Math.Min(end, (long)(block + 1) << shift) - e);
            float scale = weight.BlockScaleUnchecked(block);
            float run = 0f;
            int i = 0;
            if ((e & 1) != 0)
            {
                run = lut[packed[e >> 1] & 0xF] * xr[0];
                i = 1;
            }
            byte* p = packed + ((e + i) >> 1);
            if (decoder == NibbleDecoder.Avx512)
            {
                var table = Vector512.Load(lut);
                Vector512<float> s0 = Vector512<float>.Zero, s1 = Vector512<float>.Zero;
                for (; i + 32 <= n; i += 32, p += 16)
                {
                    NibbleLookup.Lookup32(p, table, out var v0, out var v1);
                    s0 = Vector512.FusedMultiplyAdd(v0, Vector512.Load(xr + i), s0);
                    s1 = Vector512.FusedMultiplyAdd(v1, Vector512.Load(xr + i + 16), s1);
                }
                for (; i + 16 <= n; i += 16, p += 8)
                    s0 = Vector512.FusedMultiplyAdd(NibbleLookup.Lookup16(p, table), Vector512.Load(xr + i), s0);
                acc512 = Vector512.FusedMultiplyAdd(s0 + s1, Vector512.Create(scale), acc512);
            }
            else if (decoder == NibbleDecoder.Avx2)
            {
                var low = Vector256.Load(lut);
                var high = Vector256.Load(lut + 8);
                Vector256<float> s0 = Vector256<float>.Zero, s1 = Vector256<float>.Zero;
                for (; i + 32 <= n; i += 32, p += 16)
                {
                    NibbleLookup.Lookup32(p, low, high, out var v0, out var v1, out var v2, out var v3);
                    s0 = Vector256.FusedMultiplyAdd(v0, Vector256.Load(xr + i), s0);
                    s1 = Vector256.FusedMultiplyAdd(v1, Vector256.Load(xr + i + 8), s1);
                    s0 = Vector256.FusedMultiplyAdd(v2, Vector256.Load(xr + i + 16), s0);
                    s1 = Vector256.FusedMultiplyAdd(v3, Vector256.Load(xr + i + 24), s1);
                }
                acc256 = Vector256.FusedMultiplyAdd(s0 + s1, Vector256.Create(scale), acc256);
            }
            for (; i + 2 <= n; i += 2, p++)
                run += lut[*p >> 4] * xr[i] + lut[*p & 0xF] * xr[i + 1];
            if (i < n) run += lut[*p >> 4] * xr[i];
            total += run * scale;
            e += n;
            xr += n;
        }
        return total + Vector512.Sum(acc512) + Vector256.Sum(acc256);
    }

    /// <summary>Depth of one tile: Sgemm's own depth blocking, so tiles add no passes over the output.</summary>
    private static int DepthBlock(int depth) =>
        depth <= SgemmDepth ? depth : CeilDiv(depth, CeilDiv(depth, SgemmDepthSplit));

    /// <summary>Tile extent across the output (size <paramref name="size"/>) for tiles of depth <paramref name="depth"/>: the budget, split evenly.</summary>
    private static int AcrossBlock(int size, int depth)
    {
        int max = Math.Max(TileGranule, TileFloats / depth / TileGranule * TileGranule);
        if (size <= max) return size;
        int tiles = CeilDiv(size, max);
        return Math.Min(max, CeilDiv(CeilDiv(size, tiles), TileGranule) * TileGranule);
    }

    /// <summary>Dequantizes W[r0..r0+rows, c0..c0+cols] into tile (row stride ld), split across threads by rows.</summary>
    private static void DequantizeTile(QuantizedWeight weight, int r0, int rows, int c0, int cols, float* tile, int ld)
    {
        var decoder = NibbleDecoders.Best;
        CpuParallel.ForRange(rows, Math.Max(1, MinFloatsPerThread / cols), (a, b) =>
            weight.DequantizeTile(r0 + a, b - a, c0, cols, tile + (long)a * ld, ld, decoder));
    }

    /// <summary>This thread's tile buffer, grown on demand (pinned, so the pointer stays valid).</summary>
    private static float* Scratch(int floats)
    {
        var buffer = t_scratch;
        if (buffer == null || buffer.Length < floats)
            t_scratch = buffer = GC.AllocateUninitializedArray<float>(floats, pinned: true);
        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
    }

    private static int CeilDiv(int x, int y) => (x + y - 1) / y;
}
