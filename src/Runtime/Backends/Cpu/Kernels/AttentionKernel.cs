using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>The vector width an <see cref="AttentionKernel"/> call runs on (tests pick each one explicitly).</summary>
internal enum AttentionSimd
{
    /// <summary>128-bit vectors, 4-query blocks; runs everywhere.</summary>
    Vector128,

    /// <summary>256-bit vectors (AVX2), 4-query blocks.</summary>
    Vector256,

    /// <summary>512-bit vectors (AVX-512), 8-query blocks.</summary>
    Vector512,
}

/// <summary>
/// Causal grouped-query attention, memory-efficient: scores are produced a block of queries at a time and never
/// stored as a [tq, tk] matrix; the backward recomputes them from the saved log-sum-exp (flash-attention style).
/// </summary>
/// <remarks>
/// Queries go in blocks of 8 (4 with narrower vectors) and every product is a register-blocked tile, as in a GEMM
/// microkernel: up to 8 rows × 3 vectors of accumulators, so each vector loaded from K or V feeds up to 8 FMAs
/// instead of 1, and dk / dv take rank-8 updates with the block's dout / q rows held in registers. A block computes
/// only the keys its last query sees, so the masked upper triangle costs at most one block's worth of keys per row.
/// Each worker copies its head's keys (and values) transposed into [d, ld] scratch for the products whose keys run
/// along the vector lanes (scores q · kᵀ, dp = dout · vᵀ); the products along the head dimension (p · v, ds · k,
/// the dk / dv accumulators in [tk, dp] scratch) read K, V, dout and q rows in place when d is a whole number of
/// vectors, else from zero-padded copies. Per-thread scratch is O(d · tk); a block's scores live in [block, ld].
/// exp is a short polynomial (<see cref="SimdExp.OfRemainder{TS, TV}"/>). The inner loops are
/// [MethodImpl(AggressiveOptimization)]: their tier-0 code calls every vector helper out of line and runs tens of
/// times slower, which a training run's first steps (and the tests) would otherwise pay.
/// </remarks>
internal static unsafe class AttentionKernel
{
    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>The widest vectors this machine runs natively; what the public entry points use.</summary>
    internal static AttentionSimd BestSimd { get; } =
        Vector512.IsHardwareAccelerated ? AttentionSimd.Vector512
        : Vector256.IsHardwareAccelerated ? AttentionSimd.Vector256
        : AttentionSimd.Vector128;

    /// <summary>
    /// output = softmax(scale · q kᵀ + causal mask) v per (batch, query head); lse (when not null)
    /// gets the log-sum-exp of each query's scaled scores. Query i sees keys j ≤ i + (tk − tq).
    /// </summary>
    public static void Forward(float* q, float* k, float* v, float* output, float* lse,
        int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
        => Forward(BestSimd, q, k, v, output, lse, b, tq, tk, tkCapacity, hq, hkv, d, scale);

    /// <summary><see cref="Forward(float*, float*, float*, float*, float*, int, int, int, int, int, int, int, float)"/> on the given vector width.</summary>
    internal static void Forward(AttentionSimd simd, float* q, float* k, float* v, float* output, float* lse,
        int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
    {
        // q, output: [b, tq, hq, d]; k, v: [b, tkCapacity, hkv, d] (rows < tk valid); lse: [b, hq, tq] or null
        Validate(tq, tk, tkCapacity, hq, hkv);
        switch (simd)
        {
            case AttentionSimd.Vector512: Forward<Simd512, Vector512<float>>(q, k, v, output, lse, b, tq, tk, tkCapacity, hq, hkv, d, scale); break;
            case AttentionSimd.Vector256: Forward<Simd256, Vector256<float>>(q, k, v, output, lse, b, tq, tk, tkCapacity, hq, hkv, d, scale); break;
            default: Forward<Simd128, Vector128<float>>(q, k, v, output, lse, b, tq, tk, tkCapacity, hq, hkv, d, scale); break;
        }
    }

    /// <summary>
    /// Gradients of the forward: with p recomputed as exp(scale · q · k − lse), D = dout · out,
    /// ds = p ∘ (dout · vᵀ − D): dq = scale · ds k, dk = scale · dsᵀ q, dv = pᵀ dout.
    /// dq, dk, dv are overwritten (dk, dv rows ≥ tk untouched).
    /// </summary>
    public static void Backward(float* dout, float* q, float* k, float* v, float* output, float* lse,
        float* dq, float* dk, float* dv, int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
        => Backward(BestSimd, dout, q, k, v, output, lse, dq, dk, dv, b, tq, tk, tkCapacity, hq, hkv, d, scale);

    /// <summary><see cref="Backward(float*, float*, float*, float*, float*, float*, float*, float*, float*, int, int, int, int, int, int, int, float)"/> on the given vector width.</summary>
    internal static void Backward(AttentionSimd simd, float* dout, float* q, float* k, float* v, float* output, float* lse,
        float* dq, float* dk, float* dv, int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
    {
        // dout, q, output, dq: [b, tq, hq, d]; k, v, dk, dv: [b, tkCapacity, hkv, d] (rows < tk used); lse: [b, hq, tq]
        Validate(tq, tk, tkCapacity, hq, hkv);
        switch (simd)
        {
            case AttentionSimd.Vector512:
                Backward<Simd512, Vector512<float>>(dout, q, k, v, output, lse, dq, dk, dv, b, tq, tk, tkCapacity, hq, hkv, d, scale);
                break;
            case AttentionSimd.Vector256:
                Backward<Simd256, Vector256<float>>(dout, q, k, v, output, lse, dq, dk, dv, b, tq, tk, tkCapacity, hq, hkv, d, scale);
                break;
            default:
                Backward<Simd128, Vector128<float>>(dout, q, k, v, output, lse, dq, dk, dv, b, tq, tk, tkCapacity, hq, hkv, d, scale);
                break;
        }
    }

    private static void Forward<TS, TV>(float* q, float* k, float* v, float* output, float* lse,
        int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
        where TS : struct, ISimd<TV> where TV : struct
    {
        int group = hq / hkv;
        int offset = tk - tq; // query i sits at key position i + offset
        int w = TS.Width, blockRows = BlockRows<TS, TV>();
        int ld = LeadingDimension(tk), dp = RoundUp(d, w);
        long qStride = (long)hq * d, kvStride = (long)hkv * d;
        long length = (long)d * ld + (long)tk * dp + blockRows * ((long)ld + dp);
        // Rows of whole vectors are read where they are; otherwise they are copied zero-padded first (a vector
        // load past d could run off the end of the tensor).
        bool inPlace = d % w == 0;
        CpuParallel.For(b * hq, item =>
        {
            int bi = item / hq, h = item % hq, kvh = h / group;
            var buffer = Scratch(length);
            fixed (float* pinned = buffer)
            {
                float* kt = Align(pinned);               // [d, ld] keys of this kv head, transposed, zero past tk
                float* vp = kt + (long)d * ld;           // [tk, dp] values, rows zero-padded to whole vectors (unless inPlace)
                float* s = vp + (long)tk * dp;           // [blockRows, ld] scaled scores of a block of queries, then probabilities
                float* o = s + (long)blockRows * ld;     // [blockRows, dp] the block's unnormalised output
                float* inverseSum = stackalloc float[blockRows]; // 1 / Σ p of each query in the block
                long kvBase = ((long)bi * tkCapacity * hkv + kvh) * d;
                Transpose(k + kvBase, kvStride, kt, ld, tk, d, RoundUp(tk, w));
                float* vRows = inPlace ? v + kvBase : vp;
                long vRowStride = inPlace ? kvStride : dp;
                if (!inPlace) CopyRows<TS, TV>(v + kvBase, kvStride, vp, dp, tk, d, 1f, pad: true);
                for (int i0 = 0; i0 < tq; i0 += blockRows)
                {
                    int rows = Math.Min(blockRows, tq - i0);
                    int keys = i0 + rows + offset; // keys the block's last query sees
                    long row0 = (((long)bi * tq + i0) * hq + h) * d;
                    if (i0 + blockRows < tq)
                    {
                        int nextRows = Math.Min(blockRows, tq - i0 - blockRows);
                        Prefetch(q + row0 + blockRows * qStride, qStride, nextRows, d);
                        Prefetch(output + row0 + blockRows * qStride, qStride, nextRows, d);
                    }
                    Product<TS, TV>(rows, q + row0, qStride, kt, ld, d, scale, s, ld, RoundUp(keys, w) / w);
                    for (int r = 0; r < rows; r++)
                    {
                        float* sr = s + (long)r * ld;
                        int n = i0 + r + offset + 1;
                        float max = MaskedMax<TS, TV>(sr, n);
                        float sum = ExpSum<TS, TV>(sr, n, keys, max);
                        inverseSum[r] = 1f / sum;
                        if (lse != null) lse[((long)bi * hq + h) * tq + i0 + r] = max + MathF.Log(sum);
                    }
                    Product<TS, TV>(rows, s, ld, vRows, vRowStride, keys, 1f, o, dp, dp / w);
                    for (int r = 0; r < rows; r++)
                        CopyRows<TS, TV>(o + (long)r * dp, 0, output + row0 + r * qStride, 0, 1, d, inverseSum[r], pad: false);
                }
            }
        });
    }

    private static void Backward<TS, TV>(float* dout, float* q, float* k, float* v, float* output, float* lse,
        float* dq, float* dk, float* dv, int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
        where TS : struct, ISimd<TV> where TV : struct
    {
        int group = hq / hkv;
        int offset = tk - tq;
        int w = TS.Width, blockRows = BlockRows<TS, TV>();
        int ld = LeadingDimension(tk), dp = RoundUp(d, w);
        long qStride = (long)hq * d, kvStride = (long)hkv * d;
        long headT = (long)d * ld, headP = (long)tk * dp;
        long length = 2 * headT + 3 * headP + blockRows * (2L * ld + 2L * dp) + tq;
        bool inPlace = d % w == 0; // rows of whole vectors are read (and dq written) where they are
        int headBlocks = (tq + blockRows - 1) / blockRows, itemBlocks = group * headBlocks;
        // One worker per (batch, kv head): it alone accumulates that head's dk / dv over all the query
        // heads of its group, so there are no races and the summation order is fixed.
        CpuParallel.For(b * hkv, item =>
        {
            int bi = item / hkv, kvh = item % hkv;
            var buffer = Scratch(length);
            fixed (float* pinned = buffer)
            {
                float* kt = Align(pinned);               // [d, ld] keys, transposed, zero past tk
                float* vt = kt + headT;                  // [d, ld] values, transposed, zero past tk
                float* kp = vt + headT;                  // [tk, dp] keys, rows zero-padded to whole vectors (unless inPlace)
                float* dkp = kp + headP;                 // [tk, dp] dk being accumulated
                float* dvp = dkp + headP;                // [tk, dp] dv being accumulated
                float* p = dvp + headP;                  // [blockRows, ld] scaled scores of a block of queries, then probabilities
                float* ds = p + (long)blockRows * ld;    // [blockRows, ld] dp = dout · vᵀ, then scale · the score gradients
                float* x = ds + (long)blockRows * ld;    // [blockRows, dp] dout, then q, of the block, zero-padded (unless inPlace)
                float* g = x + (long)blockRows * dp;     // [blockRows, dp] the block's dq (unless inPlace)
                float* rowDots = g + (long)blockRows * dp; // [tq] dout · out of each query of the head
                long kvBase = KvBase(item);
                // The next item (most likely this worker's next: Parallel.For hands each worker a run of indices).
                long nextKvBase = item + 1 < b * hkv ? KvBase(item + 1) : -1;
                Transpose(k + kvBase, kvStride, kt, ld, tk, d, RoundUp(tk, w));
                Transpose(v + kvBase, kvStride, vt, ld, tk, d, RoundUp(tk, w));
                float* kRows = inPlace ? k + kvBase : kp;
                long kRowStride = inPlace ? kvStride : dp;
                if (!inPlace) CopyRows<TS, TV>(k + kvBase, kvStride, kp, dp, tk, d, 1f, pad: true);
                new Span<float>(dkp, checked((int)(2 * headP))).Clear(); // dkp and dvp
                for (int h = kvh * group; h < (kvh + 1) * group; h++)
                {
                    // Σ_j p_j dp_j = dout · out, cheaper than a pass over the keys; all of the head's in one sweep,
                    // which streams the output rows in (block by block they would arrive as demand misses).
                    long headRow0 = HeadRow0(bi, h);
                    long nextHeadRow0 = h + 1 < (kvh + 1) * group ? HeadRow0(bi, h + 1)
                        : nextKvBase >= 0 ? HeadRow0((item + 1) / hkv, (item + 1) % hkv * group) : -1;
                    RowDots<TS, TV>(dout + headRow0, output + headRow0, qStride, tq, d, rowDots);
                    for (int i0 = 0; i0 < tq; i0 += blockRows)
                    {
                        int rows = Math.Min(blockRows, tq - i0);
                        int keys = i0 + rows + offset; // keys the block's last query sees
                        int keyVectors = RoundUp(keys, w) / w;
                        long row0 = (((long)bi * tq + i0) * hq + h) * d;
                        if (i0 + blockRows < tq)
                        {
                            int nextRows = Math.Min(blockRows, tq - i0 - blockRows);
                            long next = row0 + blockRows * qStride;
                            Prefetch(q + next, qStride, nextRows, d);
                            Prefetch(dout + next, qStride, nextRows, d);
                            Prefetch(dq + next, qStride, nextRows, d);
                        }
                        Product<TS, TV>(rows, q + row0, qStride, kt, ld, d, scale, p, ld, keyVectors);
                        Product<TS, TV>(rows, dout + row0, qStride, vt, ld, d, 1f, ds, ld, keyVectors);
                        for (int r = 0; r < rows; r++)
                        {
                            SoftmaxGradient<TS, TV>(p + (long)r * ld, ds + (long)r * ld, i0 + r + offset + 1, keys,
                                lse[((long)bi * hq + h) * tq + i0 + r], rowDots[i0 + r], scale);
                        }
                        // dq = (scale · ds) k for the block.
                        if (inPlace) Product<TS, TV>(rows, ds, ld, kRows, kRowStride, keys, 1f, dq + row0, qStride, dp / w);
                        else
                        {
                            Product<TS, TV>(rows, ds, ld, kRows, kRowStride, keys, 1f, g, dp, dp / w);
                            CopyRows<TS, TV>(g, dp, dq + row0, qStride, rows, d, 1f, pad: false);
                        }
                        // The rows read or written after this head or item (k and v transposed for the next item, dout
                        // and output for the next head's row dots, dk and dv copied out at the end), a slice per
                        // block: strided across the tensors, all at once they would arrive as demand misses (those
                        // passes were about a tenth of the backward at stories15M's shape). Issued mid-block, apart
                        // from the next block's rows above, so the two sets of misses do not queue together.
                        int block = i0 / blockRows, itemBlock = (h - kvh * group) * headBlocks + block;
                        if (nextKvBase >= 0)
                        {
                            PrefetchSlice(k + nextKvBase, kvStride, tk, d, itemBlock, itemBlocks);
                            PrefetchSlice(v + nextKvBase, kvStride, tk, d, itemBlock, itemBlocks);
                        }
                        if (nextHeadRow0 >= 0)
                        {
                            PrefetchSlice(dout + nextHeadRow0, qStride, tq, d, block, headBlocks);
                            PrefetchSlice(output + nextHeadRow0, qStride, tq, d, block, headBlocks);
                        }
                        PrefetchSlice(dk + kvBase, kvStride, tk, d, itemBlock, itemBlocks);
                        PrefetchSlice(dv + kvBase, kvStride, tk, d, itemBlock, itemBlocks);
                        // dv += pᵀ dout and dk += (scale · ds)ᵀ q: one pass over each accumulator per block of queries.
                        float* xRows = inPlace ? dout + row0 : x;
                        long xStride = inPlace ? qStride : dp;
                        if (!inPlace) CopyRows<TS, TV>(dout + row0, qStride, x, dp, rows, d, 1f, pad: true);
                        RankUpdate<TS, TV>(rows, p, ld, xRows, xStride, dvp, dp, keys, dp / w);
                        if (inPlace) xRows = q + row0;
                        else CopyRows<TS, TV>(q + row0, qStride, x, dp, rows, d, 1f, pad: true);
                        RankUpdate<TS, TV>(rows, ds, ld, xRows, xStride, dkp, dp, keys, dp / w);
                    }
                }
                CopyRows<TS, TV>(dkp, dp, dk + kvBase, kvStride, tk, d, 1f, pad: false);
                CopyRows<TS, TV>(dvp, dp, dv + kvBase, kvStride, tk, d, 1f, pad: false);
            }
        });

        long KvBase(int item) => ((long)(item / hkv) * tkCapacity * hkv + item % hkv) * d;
        long HeadRow0(int bi, int h) => ((long)bi * tq * hq + h) * d;
    }

    /// <summary>y[i] = e^(x[i]) by the kernel's vector exp on the given width, for n a multiple of 16 (for tests).</summary>
    internal static void Exp(AttentionSimd simd, float* x, float* y, int n)
    {
        if (n % 16 != 0) throw new ArgumentException("n must be a multiple of 16.", nameof(n));
        switch (simd)
        {
            case AttentionSimd.Vector512: ExpRows<Simd512, Vector512<float>>(x, y, n); break;
            case AttentionSimd.Vector256: ExpRows<Simd256, Vector256<float>>(x, y, n); break;
            default: ExpRows<Simd128, Vector128<float>>(x, y, n); break;
        }
    }

    private static void ExpRows<TS, TV>(float* x, float* y, int n) where TS : struct, ISimd<TV> where TV : struct
    {
        for (int i = 0; i < n; i += TS.Width) TS.Store(TS.Exp(TS.Load(x + i)), y + i);
    }

    private static void Validate(int tq, int tk, int tkCapacity, int hq, int hkv)
    {
        if (hkv <= 0 || hq % hkv != 0)
            throw new ArgumentException($"Query heads ({hq}) must be a positive multiple of kv heads ({hkv}).", nameof(hkv));
        if (tq > tk || tk > tkCapacity)
            throw new ArgumentException($"Need tq ≤ tk ≤ tkCapacity, got tq = {tq}, tk = {tk}, tkCapacity = {tkCapacity}.", nameof(tk));
    }

    // Asks for the rows p + r · stride (r < rows, d floats each) to be brought into cache, as a hint (x86 only). The
    // rows of q, dout, output and dq a block uses are strided across the tensors and would otherwise arrive by
    // demand misses, one block at a time; fetching the next block's during this one hides that latency (reading
    // output for dout · out alone was over a tenth of the backward).
    // With intoL2, the lines go to L2 only: data wanted a while from now, which would only crowd L1.
    private static void Prefetch(float* p, long stride, int rows, int d, bool intoL2 = false)
    {
        if (!Sse.IsSupported) return;
        for (int r = 0; r < rows; r++, p += stride)
        {
            for (int c = 0; c < d; c += 16) Line(p + c);
            Line(p + d - 1);
        }

        void Line(float* a)
        {
            if (intoL2) Sse.Prefetch1(a);
            else Sse.Prefetch0(a);
        }
    }

    // Prefetch into L2 of rows [part · rows / parts, (part + 1) · rows / parts) of p (stride apart, d floats each):
    // one of parts slices of a matrix wanted after the current work.
    private static void PrefetchSlice(float* p, long stride, int rows, int d, int part, int parts)
    {
        int r0 = (int)((long)rows * part / parts), r1 = (int)((long)rows * (part + 1) / parts);
        Prefetch(p + r0 * stride, stride, r1 - r0, d, intoL2: true);
    }

    // Per-thread scratch, grown to the largest request and reused across calls; 16 floats of slack let
    // Align start it on a 64-byte boundary (a misaligned 512-bit load straddles two cache lines).
    private static float[] Scratch(long length)
    {
        length += 16;
        var buffer = t_scratch;
        if (buffer == null || buffer.Length < length) t_scratch = buffer = new float[checked((int)length)];
        return buffer;
    }

    private static float* Align(float* p) => (float*)(((nint)p + 63) & ~(nint)63);

    private static int RoundUp(int n, int multiple) => (n + multiple - 1) / multiple * multiple;

    // Row stride of the transposed [d, ·] scratch and of the score rows: tk rounded up to an odd number of
    // 16-float (64-byte) cache lines. Walking down a column with a power-of-two stride would map every row to
    // the same few L1 sets and thrash them; an odd line count spreads the rows over all sets.
    private static int LeadingDimension(int tk)
    {
        int lines = (tk + 15) / 16;
        return (lines | 1) * 16;
    }

    // dst[c · ld + j] = src[j · srcStride + c] for j < rows, c < cols; dst[c · ld + j] = 0 for rows ≤ j < padded.
    // With AVX, 8 × 8 blocks go through registers (8 loads, 24 shuffles, 8 stores instead of 64 scalar
    // loads and 64 scattered stores: the scalar copy cost as much as a tenth of the backward at d = 48).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose(float* src, long srcStride, float* dst, int ld, int rows, int cols, int padded)
    {
        int j = 0, blockedCols = Avx.IsSupported ? cols - cols % 8 : 0;
        if (blockedCols > 0)
        {
            for (; j <= rows - 8; j += 8)
            {
                float* s = src + j * srcStride;
                // The source rows are strided across the tensor (and mostly not in cache): ask for those two
                // blocks ahead now.
                if (j + 24 <= rows) Prefetch(s + 16 * srcStride, srcStride, 8, cols);
                for (int c = 0; c < blockedCols; c += 8) Sgemm.Transpose8x8(s + c, (nint)srcStride, dst + (long)c * ld + j, ld);
            }
        }
        // The rows left below a whole block, then the columns right of the blocks.
        for (int jj = j; jj < rows; jj++)
        {
            float* s = src + jj * srcStride;
            for (int c = 0; c < cols; c++) dst[(long)c * ld + jj] = s[c];
        }
        for (int jj = 0; jj < j; jj++)
        {
            float* s = src + jj * srcStride;
            for (int c = blockedCols; c < cols; c++) dst[(long)c * ld + jj] = s[c];
        }
        for (int c = 0; c < cols; c++) new Span<float>(dst + (long)c * ld + rows, padded - rows).Clear();
    }

    // dst[j · dstStride + c] = factor · src[j · srcStride + c] for j < rows, c < cols; with pad, also
    // dst[j · dstStride + c] = 0 up to the cols rounded up to whole vectors (so the rows load as whole vectors).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CopyRows<TS, TV>(float* src, long srcStride, float* dst, long dstStride, int rows, int cols, float factor, bool pad)
        where TS : struct, ISimd<TV> where TV : struct
    {
        int w = TS.Width;
        int full = cols - cols % w, padded = RoundUp(cols, w);
        var f = TS.Broadcast(factor);
        for (int j = 0; j < rows; j++)
        {
            float* s = src + j * srcStride, t = dst + j * dstStride;
            // Rows strided across a tensor (and mostly not in cache): ask for the one 8 ahead now.
            if (j + 8 < rows)
            {
                if (srcStride > padded) Prefetch(s + 8 * srcStride, 0, 1, cols);
                if (dstStride > padded) Prefetch(t + 8 * dstStride, 0, 1, cols);
            }
            int c = 0;
            for (; c < full; c += w) TS.Store(TS.Multiply(TS.Load(s + c), f), t + c);
            for (; c < cols; c++) t[c] = factor * s[c];
            if (pad) for (; c < padded; c++) t[c] = 0f;
        }
    }

    // ---- Register-blocked products -------------------------------------------------------------------------------

    // c[r · ldc + j] = alpha · Σ_{k < depth} a[r · lda + k] · b[k · ldb + j] for r < rows, j < columnVectors · W: each
    // row of c is a combination of the rows of b with a's entries as broadcast coefficients (tiled as in Tiled).
    private static void Product<TS, TV>(int rows, float* a, long lda, float* b, long ldb, int depth, float alpha, float* c, long ldc, int columnVectors)
        where TS : struct, ISimd<TV> where TV : struct
        => Tiled<TS, TV, ProductTiles>(new ProductTiles(a, lda, b, ldb, depth, alpha, c, ldc), rows, columnVectors);

    // y[k · ldy + j] += Σ_{r < rows} a[r · lda + k] · x[r · ldx + j] for k < depth, j < columnVectors · W: a rank-rows
    // update of y (x's rows stay in registers while y streams through once per sub-block and column tile).
    private static void RankUpdate<TS, TV>(int rows, float* a, long lda, float* x, long ldx, float* y, long ldy, int depth, int columnVectors)
        where TS : struct, ISimd<TV> where TV : struct
        => Tiled<TS, TV, RankUpdateTiles>(new RankUpdateTiles(a, lda, x, ldx, y, ldy, depth), rows, columnVectors);

    /// <summary>One register tile of <see cref="Product{TS, TV}"/> or <see cref="RankUpdate{TS, TV}"/>, its operands bound.</summary>
    private interface ITiles
    {
        /// <summary>The TR × TN tile from row r of the block and float column j.</summary>
        void Run<TS, TV, TR, TN>(int r, int j)
            where TS : struct, ISimd<TV> where TV : struct where TR : struct, IConstant where TN : struct, IConstant;
    }

    private readonly struct ProductTiles(float* a, long lda, float* b, long ldb, int depth, float alpha, float* c, long ldc) : ITiles
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Run<TS, TV, TR, TN>(int r, int j)
            where TS : struct, ISimd<TV> where TV : struct where TR : struct, IConstant where TN : struct, IConstant
            => ProductTile<TS, TV, TR, TN>(a + r * lda, lda, b + j, ldb, depth, alpha, c + r * ldc + j, ldc);
    }

    private readonly struct RankUpdateTiles(float* a, long lda, float* x, long ldx, float* y, long ldy, int depth) : ITiles
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Run<TS, TV, TR, TN>(int r, int j)
            where TS : struct, ISimd<TV> where TV : struct where TR : struct, IConstant where TN : struct, IConstant
            => RankUpdateTile<TS, TV, TR, TN>(a + r * lda, lda, x + r * ldx + j, ldx, y + j, ldy, depth);
    }

    // The rows go in sub-blocks of 8, 4, 2, 1 (at most BlockRows), the columns in balanced tiles of up to
    // TileVectors vectors; each sub-block and tile is one instantiation of the op's microkernel.
    private static void Tiled<TS, TV, TOp>(in TOp op, int rows, int columnVectors)
        where TS : struct, ISimd<TV> where TV : struct where TOp : struct, ITiles
    {
        for (int r = 0; r < rows;)
        {
            int take = SubBlock<TS, TV>(rows - r);
            switch (take)
            {
                case 8: TiledRows<TS, TV, Eight, TOp>(op, r, columnVectors); break;
                case 4: TiledRows<TS, TV, Four, TOp>(op, r, columnVectors); break;
                case 2: TiledRows<TS, TV, Two, TOp>(op, r, columnVectors); break;
                default: TiledRows<TS, TV, One, TOp>(op, r, columnVectors); break;
            }
            r += take;
        }
    }

    private static void TiledRows<TS, TV, TR, TOp>(in TOp op, int r, int columnVectors)
        where TS : struct, ISimd<TV> where TV : struct where TR : struct, IConstant where TOp : struct, ITiles
    {
        int tiles = (columnVectors + TileVectors<TS, TV>() - 1) / TileVectors<TS, TV>();
        for (int t = 0, v = 0; t < tiles; t++)
        {
            int n = columnVectors / tiles + (t < columnVectors % tiles ? 1 : 0);
            int j = v * TS.Width;
            switch (n)
            {
                case 3: op.Run<TS, TV, TR, Three>(r, j); break;
                case 2: op.Run<TS, TV, TR, Two>(r, j); break;
                default: op.Run<TS, TV, TR, One>(r, j); break;
            }
            v += n;
        }
    }

    // Rows of the next sub-block: 8, 4, 2 or 1, no more than the vector width's block.
    private static int SubBlock<TS, TV>(int remaining) where TS : struct, ISimd<TV> where TV : struct
        => remaining >= 8 && BlockRows<TS, TV>() >= 8 ? 8 : remaining >= 4 ? 4 : remaining >= 2 ? 2 : 1;

    // The microkernel of Product: a TR × TN tile of vector accumulators (TR ≤ 8, TN ≤ 3), each step of the depth
    // loading TN vectors of b and broadcasting TR entries of a. TR and TN are compile-time constants of the
    // instantiation, so the guards fold away and the accumulators live in registers.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ProductTile<TS, TV, TR, TN>(float* a, long lda, float* b, long ldb, int depth, float alpha, float* c, long ldc)
        where TS : struct, ISimd<TV> where TV : struct where TR : struct, IConstant where TN : struct, IConstant
    {
        int w = TS.Width, rows = TR.Value, vectors = TN.Value;
        float* a0 = a, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda, a4 = a3 + lda, a5 = a4 + lda, a6 = a5 + lda, a7 = a6 + lda;
        TV c00 = TS.Zero, c01 = TS.Zero, c02 = TS.Zero, c10 = TS.Zero, c11 = TS.Zero, c12 = TS.Zero;
        TV c20 = TS.Zero, c21 = TS.Zero, c22 = TS.Zero, c30 = TS.Zero, c31 = TS.Zero, c32 = TS.Zero;
        TV c40 = TS.Zero, c41 = TS.Zero, c42 = TS.Zero, c50 = TS.Zero, c51 = TS.Zero, c52 = TS.Zero;
        TV c60 = TS.Zero, c61 = TS.Zero, c62 = TS.Zero, c70 = TS.Zero, c71 = TS.Zero, c72 = TS.Zero;
        for (int k = 0; k < depth; k++, b += ldb)
        {
            TV b0 = TS.Load(b);
            TV b1 = vectors > 1 ? TS.Load(b + w) : b0;
            TV b2 = vectors > 2 ? TS.Load(b + 2 * w) : b0;
            TV s = TS.Broadcast(a0[k]);
            c00 = TS.MultiplyAdd(s, b0, c00);
            if (vectors > 1) c01 = TS.MultiplyAdd(s, b1, c01);
            if (vectors > 2) c02 = TS.MultiplyAdd(s, b2, c02);
            if (rows > 1)
            {
                s = TS.Broadcast(a1[k]);
                c10 = TS.MultiplyAdd(s, b0, c10);
                if (vectors > 1) c11 = TS.MultiplyAdd(s, b1, c11);
                if (vectors > 2) c12 = TS.MultiplyAdd(s, b2, c12);
            }
            if (rows > 2)
            {
                s = TS.Broadcast(a2[k]);
                c20 = TS.MultiplyAdd(s, b0, c20);
                if (vectors > 1) c21 = TS.MultiplyAdd(s, b1, c21);
                if (vectors > 2) c22 = TS.MultiplyAdd(s, b2, c22);
                s = TS.Broadcast(a3[k]);
                c30 = TS.MultiplyAdd(s, b0, c30);
                if (vectors > 1) c31 = TS.MultiplyAdd(s, b1, c31);
                if (vectors > 2) c32 = TS.MultiplyAdd(s, b2, c32);
            }
            if (rows > 4)
            {
                s = TS.Broadcast(a4[k]);
                c40 = TS.MultiplyAdd(s, b0, c40);
                if (vectors > 1) c41 = TS.MultiplyAdd(s, b1, c41);
                if (vectors > 2) c42 = TS.MultiplyAdd(s, b2, c42);
                s = TS.Broadcast(a5[k]);
                c50 = TS.MultiplyAdd(s, b0, c50);
                if (vectors > 1) c51 = TS.MultiplyAdd(s, b1, c51);
                if (vectors > 2) c52 = TS.MultiplyAdd(s, b2, c52);
                s = TS.Broadcast(a6[k]);
                c60 = TS.MultiplyAdd(s, b0, c60);
                if (vectors > 1) c61 = TS.MultiplyAdd(s, b1, c61);
                if (vectors > 2) c62 = TS.MultiplyAdd(s, b2, c62);
                s = TS.Broadcast(a7[k]);
                c70 = TS.MultiplyAdd(s, b0, c70);
                if (vectors > 1) c71 = TS.MultiplyAdd(s, b1, c71);
                if (vectors > 2) c72 = TS.MultiplyAdd(s, b2, c72);
            }
        }
        var f = TS.Broadcast(alpha);
        StoreRow<TS, TV>(c, vectors, f, c00, c01, c02);
        if (rows > 1) StoreRow<TS, TV>(c + ldc, vectors, f, c10, c11, c12);
        if (rows > 2)
        {
            StoreRow<TS, TV>(c + 2 * ldc, vectors, f, c20, c21, c22);
            StoreRow<TS, TV>(c + 3 * ldc, vectors, f, c30, c31, c32);
        }
        if (rows > 4)
        {
            StoreRow<TS, TV>(c + 4 * ldc, vectors, f, c40, c41, c42);
            StoreRow<TS, TV>(c + 5 * ldc, vectors, f, c50, c51, c52);
            StoreRow<TS, TV>(c + 6 * ldc, vectors, f, c60, c61, c62);
            StoreRow<TS, TV>(c + 7 * ldc, vectors, f, c70, c71, c72);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow<TS, TV>(float* c, int vectors, TV v0, TV v1, TV v2) where TS : struct, ISimd<TV> where TV : struct
    {
        TS.Store(v0, c);
        if (vectors > 1) TS.Store(v1, c + TS.Width);
        if (vectors > 2) TS.Store(v2, c + 2 * TS.Width);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow<TS, TV>(float* c, int vectors, TV factor, TV v0, TV v1, TV v2) where TS : struct, ISimd<TV> where TV : struct
    {
        TS.Store(TS.Multiply(v0, factor), c);
        if (vectors > 1) TS.Store(TS.Multiply(v1, factor), c + TS.Width);
        if (vectors > 2) TS.Store(TS.Multiply(v2, factor), c + 2 * TS.Width);
    }

    // The microkernel of RankUpdate: TR rows × TN vectors of x held in registers; each step of the depth loads
    // TN vectors of y, adds TR broadcast entries of a times them, and stores y back.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RankUpdateTile<TS, TV, TR, TN>(float* a, long lda, float* x, long ldx, float* y, long ldy, int depth)
        where TS : struct, ISimd<TV> where TV : struct where TR : struct, IConstant where TN : struct, IConstant
    {
        int w = TS.Width, rows = TR.Value, vectors = TN.Value;
        float* a0 = a, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda, a4 = a3 + lda, a5 = a4 + lda, a6 = a5 + lda, a7 = a6 + lda;
        TV x00 = TS.Zero, x01 = TS.Zero, x02 = TS.Zero, x10 = TS.Zero, x11 = TS.Zero, x12 = TS.Zero;
        TV x20 = TS.Zero, x21 = TS.Zero, x22 = TS.Zero, x30 = TS.Zero, x31 = TS.Zero, x32 = TS.Zero;
        TV x40 = TS.Zero, x41 = TS.Zero, x42 = TS.Zero, x50 = TS.Zero, x51 = TS.Zero, x52 = TS.Zero;
        TV x60 = TS.Zero, x61 = TS.Zero, x62 = TS.Zero, x70 = TS.Zero, x71 = TS.Zero, x72 = TS.Zero;
        // Written out rather than through a helper taking refs, which could keep these locals out of registers.
        x00 = TS.Load(x);
        if (vectors > 1) x01 = TS.Load(x + w);
        if (vectors > 2) x02 = TS.Load(x + 2 * w);
        if (rows > 1)
        {
            float* xr = x + ldx;
            x10 = TS.Load(xr);
            if (vectors > 1) x11 = TS.Load(xr + w);
            if (vectors > 2) x12 = TS.Load(xr + 2 * w);
        }
        if (rows > 2)
        {
            float* xr = x + 2 * ldx;
            x20 = TS.Load(xr);
            if (vectors > 1) x21 = TS.Load(xr + w);
            if (vectors > 2) x22 = TS.Load(xr + 2 * w);
            xr += ldx;
            x30 = TS.Load(xr);
            if (vectors > 1) x31 = TS.Load(xr + w);
            if (vectors > 2) x32 = TS.Load(xr + 2 * w);
        }
        if (rows > 4)
        {
            float* xr = x + 4 * ldx;
            x40 = TS.Load(xr);
            if (vectors > 1) x41 = TS.Load(xr + w);
            if (vectors > 2) x42 = TS.Load(xr + 2 * w);
            xr += ldx;
            x50 = TS.Load(xr);
            if (vectors > 1) x51 = TS.Load(xr + w);
            if (vectors > 2) x52 = TS.Load(xr + 2 * w);
            xr += ldx;
            x60 = TS.Load(xr);
            if (vectors > 1) x61 = TS.Load(xr + w);
            if (vectors > 2) x62 = TS.Load(xr + 2 * w);
            xr += ldx;
            x70 = TS.Load(xr);
            if (vectors > 1) x71 = TS.Load(xr + w);
            if (vectors > 2) x72 = TS.Load(xr + 2 * w);
        }
        for (int k = 0; k < depth; k++, y += ldy)
        {
            TV y0 = TS.Load(y);
            TV y1 = vectors > 1 ? TS.Load(y + w) : y0;
            TV y2 = vectors > 2 ? TS.Load(y + 2 * w) : y0;
            TV s = TS.Broadcast(a0[k]);
            y0 = TS.MultiplyAdd(s, x00, y0);
            if (vectors > 1) y1 = TS.MultiplyAdd(s, x01, y1);
            if (vectors > 2) y2 = TS.MultiplyAdd(s, x02, y2);
            if (rows > 1)
            {
                s = TS.Broadcast(a1[k]);
                y0 = TS.MultiplyAdd(s, x10, y0);
                if (vectors > 1) y1 = TS.MultiplyAdd(s, x11, y1);
                if (vectors > 2) y2 = TS.MultiplyAdd(s, x12, y2);
            }
            if (rows > 2)
            {
                s = TS.Broadcast(a2[k]);
                y0 = TS.MultiplyAdd(s, x20, y0);
                if (vectors > 1) y1 = TS.MultiplyAdd(s, x21, y1);
                if (vectors > 2) y2 = TS.MultiplyAdd(s, x22, y2);
                s = TS.Broadcast(a3[k]);
                y0 = TS.MultiplyAdd(s, x30, y0);
                if (vectors > 1) y1 = TS.MultiplyAdd(s, x31, y1);
                if (vectors > 2) y2 = TS.MultiplyAdd(s, x32, y2);
            }
            if (rows > 4)
            {
                s = TS.Broadcast(a4[k]);
                y0 = TS.MultiplyAdd(s, x40, y0);
                if (vectors > 1) y1 = TS.MultiplyAdd(s, x41, y1);
                if (vectors > 2) y2 = TS.MultiplyAdd(s, x42, y2);
                s = TS.Broadcast(a5[k]);
                y0 = TS.MultiplyAdd(s, x50, y0);
                if (vectors > 1) y1 = TS.MultiplyAdd(s, x51, y1);
                if (vectors > 2) y2 = TS.MultiplyAdd(s, x52, y2);
                s = TS.Broadcast(a6[k]);
                y0 = TS.MultiplyAdd(s, x60, y0);
                if (vectors > 1) y1 = TS.MultiplyAdd(s, x61, y1);
                if (vectors > 2) y2 = TS.MultiplyAdd(s, x62, y2);
                s = TS.Broadcast(a7[k]);
                y0 = TS.MultiplyAdd(s, x70, y0);
                if (vectors > 1) y1 = TS.MultiplyAdd(s, x71, y1);
                if (vectors > 2) y2 = TS.MultiplyAdd(s, x72, y2);
            }
            StoreRow<TS, TV>(y, vectors, y0, y1, y2);
        }
    }

    // dots[i] = a_i · b_i for the rows i < rows (stride apart, n floats each), four at a time so one Sum4 finishes
    // four of them (a full reduction per row cost more than its few FMAs).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowDots<TS, TV>(float* a, float* b, long stride, int rows, int n, float* dots)
        where TS : struct, ISimd<TV> where TV : struct
    {
        int w = TS.Width, full = n - n % w, i = 0;
        for (; i <= rows - 4; i += 4, a += 4 * stride, b += 4 * stride)
        {
            TV s0 = TS.Zero, s1 = TS.Zero, s2 = TS.Zero, s3 = TS.Zero;
            for (int c = 0; c < full; c += w)
            {
                s0 = TS.MultiplyAdd(TS.Load(a + c), TS.Load(b + c), s0);
                s1 = TS.MultiplyAdd(TS.Load(a + stride + c), TS.Load(b + stride + c), s1);
                s2 = TS.MultiplyAdd(TS.Load(a + 2 * stride + c), TS.Load(b + 2 * stride + c), s2);
                s3 = TS.MultiplyAdd(TS.Load(a + 3 * stride + c), TS.Load(b + 3 * stride + c), s3);
            }
            TS.Sum4(s0, s1, s2, s3).Store(dots + i);
            for (int r = 0; r < 4; r++)
                for (int c = full; c < n; c++) dots[i + r] += a[r * stride + c] * b[r * stride + c];
        }
        for (; i < rows; i++, a += stride, b += stride) dots[i] = SoftmaxKernel.Dot(a, b, n);
    }

    // ---- Softmax rows --------------------------------------------------------------------------------------------

    // max_{j < n} s[j]; the rest of the last vector gets −∞ (so its exp is 0).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float MaskedMax<TS, TV>(float* s, int n) where TS : struct, ISimd<TV> where TV : struct
    {
        int w = TS.Width, full = n - n % w, j = 0;
        var max0 = TS.Broadcast(float.NegativeInfinity);
        var max1 = max0;
        for (; j <= full - 2 * w; j += 2 * w)
        {
            max0 = TS.Max(max0, TS.Load(s + j));
            max1 = TS.Max(max1, TS.Load(s + j + w));
        }
        if (j < full)
        {
            max0 = TS.Max(max0, TS.Load(s + j));
            j += w;
        }
        if (j < n)
        {
            var t = TS.FirstLanes(TS.Load(s + j), n - j, TS.Broadcast(float.NegativeInfinity));
            TS.Store(t, s + j);
            max1 = TS.Max(max1, t);
        }
        return TS.MaxAcross(TS.Max(max0, max1));
    }

    // p[j] = e^(t[j] − max) over the vectors that hold the n visible keys (the masked lanes give 0), p[j] = 0 from
    // there up to keys (the block's product runs over all of them); returns Σ p.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float ExpSum<TS, TV>(float* s, int n, int keys, float max) where TS : struct, ISimd<TV> where TV : struct
    {
        int w = TS.Width, j = 0;
        var vmax = TS.Broadcast(max);
        var sum0 = TS.Zero;
        var sum1 = TS.Zero;
        for (; j <= n - 2 * w; j += 2 * w)
        {
            var e0 = TS.Exp(TS.Subtract(TS.Load(s + j), vmax));
            var e1 = TS.Exp(TS.Subtract(TS.Load(s + j + w), vmax));
            TS.Store(e0, s + j);
            TS.Store(e1, s + j + w);
            sum0 = TS.Add(sum0, e0);
            sum1 = TS.Add(sum1, e1);
        }
        for (; j < n; j += w)
        {
            var e = TS.Exp(TS.Subtract(TS.Load(s + j), vmax));
            TS.Store(e, s + j);
            sum0 = TS.Add(sum0, e);
        }
        for (; j < keys; j += w) TS.Store(TS.Zero, s + j);
        return TS.SumAcross(TS.Add(sum0, sum1));
    }

    // p[j] = e^(s[j] − lse) and ds[j] = scale · p[j] · (dp[j] − dot) (dp arrives in ds) for j < n; both 0 from n up
    // to keys, so the block's products and rank updates can run over all of its keys. (Both dq and dk take
    // scale · ds: applied here once per score rather than to either of them.)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxGradient<TS, TV>(float* p, float* ds, int n, int keys, float lse, float dot, float scale)
        where TS : struct, ISimd<TV> where TV : struct
    {
        int w = TS.Width, full = n - n % w, j = 0;
        var vlse = TS.Broadcast(lse);
        var vscale = TS.Broadcast(scale);
        var vdot = TS.Broadcast(dot);
        for (; j < full; j += w)
        {
            var e = TS.Exp(TS.Subtract(TS.Load(p + j), vlse));
            TS.Store(e, p + j);
            TS.Store(TS.Multiply(TS.Multiply(e, vscale), TS.Subtract(TS.Load(ds + j), vdot)), ds + j);
        }
        if (j < n)
        {
            var e = TS.FirstLanes(TS.Exp(TS.Subtract(TS.Load(p + j), vlse)), n - j, TS.Zero);
            TS.Store(e, p + j);
            TS.Store(TS.FirstLanes(TS.Multiply(TS.Multiply(e, vscale), TS.Subtract(TS.Load(ds + j), vdot)), n - j, TS.Zero), ds + j);
            j += w;
        }
        for (; j < keys; j += w)
        {
            TS.Store(TS.Zero, p + j);
            TS.Store(TS.Zero, ds + j);
        }
    }

    // ---- Block shape per vector width ------------------------------------------------------------------------------

    /// <summary>
    /// Queries per block: the most rows of a product tile. AVX-512's 32 registers hold 8 × 3 accumulators (24 of
    /// them), so each B vector feeds 8 FMAs and each broadcast 3; with 16 registers, 4 × 2 accumulators (and 4 × 2
    /// x rows in the rank update) leave room for the operands. A JIT-time constant per instantiation.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BlockRows<TS, TV>() where TS : struct, ISimd<TV> where TV : struct => TS.Width == 16 ? 8 : 4;

    /// <summary>The most vectors across a product tile (see <see cref="BlockRows{TS, TV}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int TileVectors<TS, TV>() where TS : struct, ISimd<TV> where TV : struct => TS.Width == 16 ? 3 : 2;
}
