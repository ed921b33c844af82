using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// Matrix products with a frozen weight W [out, in] held in a compact form (an <see cref="IWeightTileSource"/>: 4-bit
/// codes, bf16, fp16) that never materialise W in float: the forward y = x·Wᵀ and the input gradient dx = dy·W decode one
/// tile of W at a time into a per-thread scratch buffer (at most <see cref="TileFloats"/> floats, so memory stays bounded
/// however large W is) and run <see cref="Sgemm"/> on it. For a single row (token-by-token generation) the GEMVs decode
/// one row slice at a time into L1 instead.
/// </summary>
/// <remarks>
/// Tiles span <see cref="DepthBlock"/> along the GEMM's reduction dimension, the depth Sgemm itself blocks by, so a tiled
/// product makes no more passes over its output than one big SGEMM would; across the other dimension a tile takes as many
/// rows or columns as the budget allows, because every extra tile there re-packs the activations. Threads: the tile decode
/// is split across threads by rows, and each SGEMM threads itself. (Running tiles on separate threads would need a
/// single-threaded SGEMM per tile, and each would re-pack all of x.)
/// </remarks>
internal static unsafe class TiledWeightMatMulKernel
{
    /// <summary>
    /// Decoded floats per tile: 4 MiB, the packed B block Sgemm itself keeps in L3 ([256, NC = 4096]), so a tiled product
    /// re-packs the activations about as often as one SGEMM does (every tile across the output re-packs them). Measured with
    /// two threads (AVX-512) against float SGEMM of the same shape: bf16/fp16 x [512, 2048] · W [5632 or 2048, 2048]ᵀ
    /// cost 3–10% forward and 13–14% input gradient with 512 KiB tiles (eleven tiles across the MLP's outputs), 0–7% and
    /// 5–11% (typically 6–8%) with this budget; 4-bit x [2048, 288] · W [768, 288]ᵀ cost 1–3% with 512 KiB tiles and nothing
    /// measurable once W fits one tile.
    /// </summary>
    internal const int TileFloats = 1 << 20;

    /// <summary>Least work (floats) worth a thread for the tile decode and the GEMVs.</summary>
    internal const int MinFloatsPerThread = 32768;

    /// <summary>Most columns one GEMV step decodes: 8 KiB of decoded row (plus 8 KiB of x or dx), in L1.</summary>
    internal const int MaxGemvChunk = 2048;

    // Sgemm's depth blocking (its KC and KcSplit): a depth up to 384 is one block, deeper ones split into ~256.
    private const int SgemmDepth = 384;
    private const int SgemmDepthSplit = 256;

    /// <summary>Tile rows/columns across the output are multiples of this (Sgemm's AVX-512 microkernel width).</summary>
    private const int TileGranule = 32;

    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>y [rows, out] = x [rows, in] · Wᵀ: one row through <see cref="Gemv{TSource}"/>, more through the tiles.</summary>
    public static void Forward<TSource>(float* x, TSource weight, float* y, int rows) where TSource : struct, IWeightTileSource
    {
        if (rows == 1) Gemv(x, weight, y);
        else ForwardTiled(x, weight, y, rows);
    }

    /// <summary>dx [rows, in] (+)= dy [rows, out] · W: one row through <see cref="GemvTransposed{TSource}"/>, more through the tiles.</summary>
    public static void BackwardInput<TSource>(float* dy, TSource weight, float* dx, int rows, bool accumulate) where TSource : struct, IWeightTileSource
    {
        if (rows == 1) GemvTransposed(dy, weight, dx, accumulate);
        else BackwardTiled(dy, weight, dx, rows, accumulate);
    }

    /// <summary>y [rows, out] = x [rows, in] · Wᵀ through decoded tiles and SGEMM, for any number of rows.</summary>
    public static void ForwardTiled<TSource>(float* x, TSource weight, float* y, int rows) where TSource : struct, IWeightTileSource
    {
        if (rows == 0) return;
        int outF = weight.Rows, inF = weight.Columns;
        // Depth = W's columns (in); tiles W[o0..o0+nb, i0..i0+kb] are [nb, kb] row-major, used as op(B) = tileᵀ.
        int kb = DepthBlock(inF);
        int nb = AcrossBlock(outF, kb);
        float* tile = Scratch(nb * kb);                                                       // [nb, kb]
        for (int o0 = 0; o0 < outF; o0 += nb)
        {
            int n = Math.Min(nb, outF - o0);
            for (int i0 = 0; i0 < inF; i0 += kb)
            {
                int k = Math.Min(kb, inF - i0);
                DecodeTile(weight, o0, n, i0, k, tile, k);
                Sgemm.Multiply(false, true, rows, n, k, 1f, x + i0, inF, tile, k, i0 == 0 ? 0f : 1f, y + o0, outF);
            }
        }
    }

    /// <summary>dx [rows, in] (+)= dy [rows, out] · W through decoded tiles and SGEMM, for any number of rows.</summary>
    public static void BackwardTiled<TSource>(float* dy, TSource weight, float* dx, int rows, bool accumulate) where TSource : struct, IWeightTileSource
    {
        if (rows == 0) return;
        int outF = weight.Rows, inF = weight.Columns;
        // Depth = W's rows (out); tiles W[o0..o0+kb, i0..i0+nb] are [kb, nb] row-major, used as op(B) directly.
        int kb = DepthBlock(outF);
        int nb = AcrossBlock(inF, kb);
        float* tile = Scratch(kb * nb);                                                       // [kb, nb]
        for (int i0 = 0; i0 < inF; i0 += nb)
        {
            int n = Math.Min(nb, inF - i0);
            for (int o0 = 0; o0 < outF; o0 += kb)
            {
                int k = Math.Min(kb, outF - o0);
                DecodeTile(weight, o0, k, i0, n, tile, n);
                float beta = o0 == 0 && !accumulate ? 0f : 1f;
                Sgemm.Multiply(false, false, rows, n, k, 1f, dy + o0, outF, tile, n, beta, dx + i0, inF);
            }
        }
    }

    /// <summary>
    /// y [out] = W · x [in] for one row of x: each thread owns a range of W's rows and, row by row, decodes a slice of at
    /// most <see cref="MaxGemvChunk"/> columns into a stack buffer and dots it with x.
    /// </summary>
    public static void Gemv<TSource>(float* x, TSource weight, float* y) where TSource : struct, IWeightTileSource
    {
        int inF = weight.Columns;
        CpuParallel.ForRange(weight.Rows, Math.Max(1, MinFloatsPerThread / inF), (r0, r1) =>
        {
            float* row = stackalloc float[MaxGemvChunk];                                      // [n] W[r, c0..c0+n]
            for (int r = r0; r < r1; r++)
            {
                float sum = 0f;
                for (int c0 = 0; c0 < inF; c0 += MaxGemvChunk)
                {
                    int n = Math.Min(MaxGemvChunk, inF - c0);
                    weight.DecodeTile(r, 1, c0, n, row, n);
                    sum += TensorPrimitives.Dot(new ReadOnlySpan<float>(row, n), new ReadOnlySpan<float>(x + c0, n));
                }
                y[r] = sum;
            }
        });
    }

    /// <summary>
    /// dx [in] (+)= dy [out] · W for one row of dy: each thread owns a range of dx's columns, keeps it in L1 and adds dy[o]
    /// times every weight row's slice, decoded into a small stack buffer.
    /// </summary>
    public static void GemvTransposed<TSource>(float* dy, TSource weight, float* dx, bool accumulate) where TSource : struct, IWeightTileSource
    {
        int outF = weight.Rows, inF = weight.Columns;
        int threads = (int)Math.Clamp((long)outF * inF / MinFloatsPerThread, 1, CpuParallel.MaxThreads);
        int chunk = Math.Clamp(CeilDiv(CeilDiv(inF, threads), 16) * 16, 16, MaxGemvChunk);
        CpuParallel.For(CeilDiv(inF, chunk), c =>
        {
            int c0 = c * chunk, n = Math.Min(chunk, inF - c0);
            float* row = stackalloc float[MaxGemvChunk];                                       // [n] W[o, c0..c0+n]
            var slice = new Span<float>(dx + c0, n);                                            // [n] dx[c0..c0+n]
            if (!accumulate) slice.Clear();
            for (int o = 0; o < outF; o++)
            {
                weight.DecodeTile(o, 1, c0, n, row, n);
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(row, n), dy[o], slice, slice);
            }
        });
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

    /// <summary>Decodes W[r0..r0+rows, c0..c0+cols] into tile (row stride ld), split across threads by rows.</summary>
    private static void DecodeTile<TSource>(TSource weight, int r0, int rows, int c0, int cols, float* tile, int ld) where TSource : struct, IWeightTileSource =>
        CpuParallel.ForRange(rows, Math.Max(1, MinFloatsPerThread / cols), (a, b) =>
            weight.DecodeTile(r0 + a, b - a, c0, cols, tile + (long)a * ld, ld));

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
