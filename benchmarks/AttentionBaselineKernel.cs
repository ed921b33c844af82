using System.Runtime.Intrinsics;
using PeftGen.Backends.Cpu;
using PeftGen.Backends.Cpu.Kernels;

namespace PeftGen.Benchmarks;

/// <summary>
/// The CPU attention kernel as it was before query-blocking (a query row at a time, GEMV-like), kept only so the
/// attention benchmark can time the current <see cref="AttentionKernel"/> against it call by call on the same machine.
/// Same contract as <see cref="AttentionKernel"/>; not used by the library.
/// </summary>
internal static unsafe class AttentionBaselineKernel
{
    // Queries whose dk / dv contributions the backward applies in one pass (AddRank4 takes exactly 4).
    private const int QueryBlock = 4;

    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>
    /// output = softmax(scale · q kᵀ + causal mask) v per (batch, query head); lse (when not null)
    /// gets the log-sum-exp of each query's scaled scores. Query i sees keys j ≤ i + (tk − tq).
    /// </summary>
    public static void Forward(float* q, float* k, float* v, float* output, float* lse,
        int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
    {
        // q, output: [b, tq, hq, d]; k, v: [b, tkCapacity, hkv, d] (rows < tk valid); lse: [b, hq, tq] or null
        Validate(tq, tk, tkCapacity, hq, hkv);
        int group = hq / hkv;
        int offset = tk - tq; // query i sits at key position i + offset
        int ld = LeadingDimension(tk);
        long headSize = (long)d * ld;
        CpuParallel.For(b * hq, item =>
        {
            int bi = item / hq, h = item % hq, kvh = h / group;
            fixed (float* scratch = Scratch(2 * headSize + ld))
            {
                float* kt = scratch;          // [d, ld] keys of this kv head, transposed
                float* vt = kt + headSize;    // [d, ld] values, transposed
                float* p = vt + headSize;     // [tk] scores of one query, then its probabilities
                long kvBase = ((long)bi * tkCapacity * hkv + kvh) * d;
                Transpose(k + kvBase, hkv * d, kt, ld, tk, d);
                Transpose(v + kvBase, hkv * d, vt, ld, tk, d);
                for (int i = 0; i < tq; i++)
                {
                    int n = i + offset + 1;
                    long row = (((long)bi * tq + i) * hq + h) * d;
                    RowTimesTransposed(q + row, kt, ld, d, n, scale, p);
                    float max = SoftmaxKernel.RowMax(p, n);
                    float sum = SoftmaxKernel.ExpShift(p, p, n, max, 1f);
                    MatVec(vt, ld, d, p, n, 1f / sum, output + row);
                    if (lse != null) lse[((long)bi * hq + h) * tq + i] = max + MathF.Log(sum);
                }
            }
        });
    }

    /// <summary>
    /// Gradients of the forward: with p recomputed as exp(scale · q · k − lse), D = dout · out,
    /// ds = p ∘ (dout · vᵀ − D): dq = scale · ds k, dk = scale · dsᵀ q, dv = pᵀ dout.
    /// dq, dk, dv are overwritten (dk, dv rows ≥ tk untouched).
    /// </summary>
    public static void Backward(float* dout, float* q, float* k, float* v, float* output, float* lse,
        float* dq, float* dk, float* dv, int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
    {
        // dout, q, output, dq: [b, tq, hq, d]; k, v, dk, dv: [b, tkCapacity, hkv, d] (rows < tk used); lse: [b, hq, tq]
        Validate(tq, tk, tkCapacity, hq, hkv);
        int group = hq / hkv;
        int offset = tk - tq;
        int ld = LeadingDimension(tk);
        long headSize = (long)d * ld;
        // One worker per (batch, kv head): it alone accumulates that head's dk / dv over all the query
        // heads of its group, so there are no races and the summation order is fixed.
        CpuParallel.For(b * hkv, item =>
        {
            int bi = item / hkv, kvh = item % hkv;
            fixed (float* scratch = Scratch(4 * headSize + 2 * QueryBlock * ld))
            {
                float* kt = scratch;          // [d, ld] keys, transposed
                float* vt = kt + headSize;    // [d, ld] values, transposed
                float* dkt = vt + headSize;   // [d, ld] dk being accumulated, transposed
                float* dvt = dkt + headSize;  // [d, ld] dv being accumulated, transposed
                float* p = dvt + headSize;    // [QueryBlock, ld] probabilities of a block of queries
                float* ds = p + QueryBlock * ld; // [QueryBlock, ld] dp = dout · vᵀ, then the score gradients
                float* qCoef = stackalloc float[QueryBlock];   // scale · q[c] of each query in the block
                float* doutCoef = stackalloc float[QueryBlock]; // dout[c] of each query in the block
                long kvBase = ((long)bi * tkCapacity * hkv + kvh) * d;
                Transpose(k + kvBase, hkv * d, kt, ld, tk, d);
                Transpose(v + kvBase, hkv * d, vt, ld, tk, d);
                new Span<float>(dkt, checked((int)(2 * headSize))).Clear(); // dkt and dvt
                for (int h = kvh * group; h < (kvh + 1) * group; h++)
                {
                    // Queries go in blocks so each read-modify-write of dkt / dvt carries QueryBlock FMAs.
                    for (int i0 = 0; i0 < tq; i0 += QueryBlock)
                    {
                        int blockEnd = Math.Min(tq, i0 + QueryBlock);
                        int nBlock = blockEnd + offset; // keys seen by the block's last query
                        for (int r = 0; r < QueryBlock; r++)
                        {
                            float* pr = p + r * ld, dsr = ds + r * ld;
                            int i = i0 + r;
                            // Keys a query cannot see (and whole rows past tq) get p = ds = 0 for the block update.
                            int n = i < blockEnd ? i + offset + 1 : 0;
                            new Span<float>(pr + n, nBlock - n).Clear();
                            new Span<float>(dsr + n, nBlock - n).Clear();
                            if (i >= blockEnd) continue;
                            long row = (((long)bi * tq + i) * hq + h) * d;
                            float* doi = dout + row;
                            RowTimesTransposed(q + row, kt, ld, d, n, scale, pr);
                            SoftmaxKernel.ExpShift(pr, pr, n, lse[((long)bi * hq + h) * tq + i], 1f);
                            RowTimesTransposed(doi, vt, ld, d, n, 1f, dsr);
                            // Σ_j p_j dp_j = dout · out, cheaper than a pass over the keys.
                            float rowDot = SoftmaxKernel.Dot(doi, output + row, d);
                            SoftmaxKernel.BackwardRow(dsr, pr, dsr, n, rowDot, accumulate: false);
                            MatVec(kt, ld, d, dsr, n, scale, dq + row);
                        }
                        for (int c = 0; c < d; c++)
                        {
                            for (int r = 0; r < QueryBlock; r++)
                            {
                                long row = (((long)bi * tq + i0 + r) * hq + h) * d;
                                bool inBlock = i0 + r < blockEnd;
                                qCoef[r] = inBlock ? scale * q[row + c] : 0f;
                                doutCoef[r] = inBlock ? dout[row + c] : 0f;
                            }
                            AddRank4(dkt + (long)c * ld, qCoef, ds, ld, nBlock);
                            AddRank4(dvt + (long)c * ld, doutCoef, p, ld, nBlock);
                        }
                    }
                }
                TransposeBack(dkt, ld, dk + kvBase, hkv * d, tk, d);
                TransposeBack(dvt, ld, dv + kvBase, hkv * d, tk, d);
            }
        });
    }

    private static void Validate(int tq, int tk, int tkCapacity, int hq, int hkv)
    {
        if (hkv <= 0 || hq % hkv != 0)
            throw new ArgumentException($"Query heads ({hq}) must be a positive multiple of kv heads ({hkv}).", nameof(hkv));
        if (tq > tk || tk > tkCapacity)
            throw new ArgumentException($"Need tq ≤ tk ≤ tkCapacity, got tq = {tq}, tk = {tk}, tkCapacity = {tkCapacity}.", nameof(tk));
    }

    // Per-thread scratch, grown to the largest request and reused across calls.
    private static float[] Scratch(long length)
    {
        var buffer = t_scratch;
        if (buffer == null || buffer.Length < length) t_scratch = buffer = new float[checked((int)length)];
        return buffer;
    }

    // Row stride of the transposed [d, ·] scratch: tk rounded up to an odd number of 16-float (64-byte)
    // cache lines. Walking down a column with a power-of-two stride would map every row to the same
    // few L1 sets and thrash them; an odd line count spreads the rows over all sets.
    private static int LeadingDimension(int tk)
    {
        int lines = (tk + 15) / 16;
        return (lines | 1) * 16;
    }

    // dst[c · dstStride + j] = src[j · srcStride + c] for j < rows, c < cols.
    private static void Transpose(float* src, int srcStride, float* dst, int dstStride, int rows, int cols)
    {
        for (int j = 0; j < rows; j++)
        {
            float* s = src + (long)j * srcStride;
            for (int c = 0; c < cols; c++) dst[(long)c * dstStride + j] = s[c];
        }
    }

    // dst[j · dstStride + c] = src[c · srcStride + j] for j < rows, c < cols.
    private static void TransposeBack(float* src, int srcStride, float* dst, int dstStride, int rows, int cols)
    {
        for (int j = 0; j < rows; j++)
        {
            float* o = dst + (long)j * dstStride;
            for (int c = 0; c < cols; c++) o[c] = src[(long)c * srcStride + j];
        }
    }

    // s[j] = scale · Σ_c a[c] · bt[c · ld + j] for j < n: one row of a Bᵀ with B stored transposed.
    // Keys go in the vector lanes and the d-long reduction runs down the register, so no horizontal
    // sums; four independent accumulators (64 keys) keep the FMA units busy despite their latency.
    private static void RowTimesTransposed(float* a, float* bt, int ld, int d, int n, float scale, float* s)
    {
        int j = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var vscale = Vector512.Create(scale);
            for (; j <= n - 64; j += 64)
            {
                var acc0 = Vector512<float>.Zero;
                var acc1 = Vector512<float>.Zero;
                var acc2 = Vector512<float>.Zero;
                var acc3 = Vector512<float>.Zero;
                float* col = bt + j;
                for (int c = 0; c < d; c++, col += ld)
                {
                    var ac = Vector512.Create(a[c]);
                    acc0 = Vector512.FusedMultiplyAdd(ac, Vector512.Load(col), acc0);
                    acc1 = Vector512.FusedMultiplyAdd(ac, Vector512.Load(col + 16), acc1);
                    acc2 = Vector512.FusedMultiplyAdd(ac, Vector512.Load(col + 32), acc2);
                    acc3 = Vector512.FusedMultiplyAdd(ac, Vector512.Load(col + 48), acc3);
                }
                (acc0 * vscale).Store(s + j);
                (acc1 * vscale).Store(s + j + 16);
                (acc2 * vscale).Store(s + j + 32);
                (acc3 * vscale).Store(s + j + 48);
            }
            for (; j <= n - 16; j += 16)
            {
                var acc = Vector512<float>.Zero;
                float* col = bt + j;
                for (int c = 0; c < d; c++, col += ld) acc = Vector512.FusedMultiplyAdd(Vector512.Create(a[c]), Vector512.Load(col), acc);
                (acc * vscale).Store(s + j);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var vscale = Vector256.Create(scale);
            for (; j <= n - 32; j += 32)
            {
                var acc0 = Vector256<float>.Zero;
                var acc1 = Vector256<float>.Zero;
                var acc2 = Vector256<float>.Zero;
                var acc3 = Vector256<float>.Zero;
                float* col = bt + j;
                for (int c = 0; c < d; c++, col += ld)
                {
                    var ac = Vector256.Create(a[c]);
                    acc0 = Vector256.FusedMultiplyAdd(ac, Vector256.Load(col), acc0);
                    acc1 = Vector256.FusedMultiplyAdd(ac, Vector256.Load(col + 8), acc1);
                    acc2 = Vector256.FusedMultiplyAdd(ac, Vector256.Load(col + 16), acc2);
                    acc3 = Vector256.FusedMultiplyAdd(ac, Vector256.Load(col + 24), acc3);
                }
                (acc0 * vscale).Store(s + j);
                (acc1 * vscale).Store(s + j + 8);
                (acc2 * vscale).Store(s + j + 16);
                (acc3 * vscale).Store(s + j + 24);
            }
            for (; j <= n - 8; j += 8)
            {
                var acc = Vector256<float>.Zero;
                float* col = bt + j;
                for (int c = 0; c < d; c++, col += ld) acc = Vector256.FusedMultiplyAdd(Vector256.Create(a[c]), Vector256.Load(col), acc);
                (acc * vscale).Store(s + j);
            }
        }
        for (; j < n; j++)
        {
            float acc = 0f;
            for (int c = 0; c < d; c++) acc += a[c] * bt[(long)c * ld + j];
            s[j] = acc * scale;
        }
    }

    // y[c] = scale · Σ_j m[c · ld + j] · x[j] for c < rows, j < n. Four rows at a time share each load
    // of x and give four independent FMA chains; the leftover rows fall back to plain dot products.
    private static void MatVec(float* m, int ld, int rows, float* x, int n, float scale, float* y)
    {
        int c = 0;
        for (; c <= rows - 4; c += 4)
        {
            float* m0 = m + (long)c * ld, m1 = m0 + ld, m2 = m1 + ld, m3 = m2 + ld;
            int j = 0;
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            var acc2 = Vector256<float>.Zero;
            var acc3 = Vector256<float>.Zero;
            if (Vector512.IsHardwareAccelerated)
            {
                var wide0 = Vector512<float>.Zero;
                var wide1 = Vector512<float>.Zero;
                var wide2 = Vector512<float>.Zero;
                var wide3 = Vector512<float>.Zero;
                for (; j <= n - 16; j += 16)
                {
                    var vx = Vector512.Load(x + j);
                    wide0 = Vector512.FusedMultiplyAdd(Vector512.Load(m0 + j), vx, wide0);
                    wide1 = Vector512.FusedMultiplyAdd(Vector512.Load(m1 + j), vx, wide1);
                    wide2 = Vector512.FusedMultiplyAdd(Vector512.Load(m2 + j), vx, wide2);
                    wide3 = Vector512.FusedMultiplyAdd(Vector512.Load(m3 + j), vx, wide3);
                }
                acc0 = wide0.GetLower() + wide0.GetUpper();
                acc1 = wide1.GetLower() + wide1.GetUpper();
                acc2 = wide2.GetLower() + wide2.GetUpper();
                acc3 = wide3.GetLower() + wide3.GetUpper();
            }
            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            if (Vector256.IsHardwareAccelerated)
            {
                for (; j <= n - 8; j += 8)
                {
                    var vx = Vector256.Load(x + j);
                    acc0 = Vector256.FusedMultiplyAdd(Vector256.Load(m0 + j), vx, acc0);
                    acc1 = Vector256.FusedMultiplyAdd(Vector256.Load(m1 + j), vx, acc1);
                    acc2 = Vector256.FusedMultiplyAdd(Vector256.Load(m2 + j), vx, acc2);
                    acc3 = Vector256.FusedMultiplyAdd(Vector256.Load(m3 + j), vx, acc3);
                }
                s0 = Vector256.Sum(acc0);
                s1 = Vector256.Sum(acc1);
                s2 = Vector256.Sum(acc2);
                s3 = Vector256.Sum(acc3);
            }
            for (; j < n; j++)
            {
                s0 += m0[j] * x[j];
                s1 += m1[j] * x[j];
                s2 += m2[j] * x[j];
                s3 += m3[j] * x[j];
            }
            y[c] = s0 * scale;
            y[c + 1] = s1 * scale;
            y[c + 2] = s2 * scale;
            y[c + 3] = s3 * scale;
        }
        for (; c < rows; c++) y[c] = scale * SoftmaxKernel.Dot(m + (long)c * ld, x, n);
    }

    // y[j] += Σ_r coef[r] · rows[r · ld + j] for r < 4, j < n: four AXPYs fused into one pass over y.
    private static void AddRank4(float* y, float* coef, float* rows, int ld, int n)
    {
        float* r0 = rows, r1 = r0 + ld, r2 = r1 + ld, r3 = r2 + ld;
        int j = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var c0 = Vector512.Create(coef[0]);
            var c1 = Vector512.Create(coef[1]);
            var c2 = Vector512.Create(coef[2]);
            var c3 = Vector512.Create(coef[3]);
            for (; j <= n - 16; j += 16)
            {
                var acc = Vector512.FusedMultiplyAdd(c0, Vector512.Load(r0 + j), Vector512.Load(y + j));
                acc = Vector512.FusedMultiplyAdd(c1, Vector512.Load(r1 + j), acc);
                acc = Vector512.FusedMultiplyAdd(c2, Vector512.Load(r2 + j), acc);
                Vector512.FusedMultiplyAdd(c3, Vector512.Load(r3 + j), acc).Store(y + j);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var c0 = Vector256.Create(coef[0]);
            var c1 = Vector256.Create(coef[1]);
            var c2 = Vector256.Create(coef[2]);
            var c3 = Vector256.Create(coef[3]);
            for (; j <= n - 8; j += 8)
            {
                var acc = Vector256.FusedMultiplyAdd(c0, Vector256.Load(r0 + j), Vector256.Load(y + j));
                acc = Vector256.FusedMultiplyAdd(c1, Vector256.Load(r1 + j), acc);
                acc = Vector256.FusedMultiplyAdd(c2, Vector256.Load(r2 + j), acc);
                Vector256.FusedMultiplyAdd(c3, Vector256.Load(r3 + j), acc).Store(y + j);
            }
        }
        for (; j < n; j++) y[j] += coef[0] * r0[j] + coef[1] * r1[j] + coef[2] * r2[j] + coef[3] * r3[j];
    }
}
