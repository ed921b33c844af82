using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftGen.Backends.Cpu;

// The skinny paths: problems with one tiny dimension, which is what a LoRA layer issues (rank
// r = 4..64 against thousands of tokens and hundreds of features). The blocked path pads such a
// dimension up to a 14 x 32 tile and packs the large operand in full for very little arithmetic
// per packed element; these paths stream the large operand once, unpacked, and pack only what is
// tiny. Three shapes of work:
//   - small depth (k <= SkinnyDepth): a rank-k update. op(B) [k, n] is packed once and stays in
//     cache; each block of C rows is A's few values broadcast against it. Rows split across threads.
//   - small m with op(B) rows contiguous (dA = dhᵀ·x, and dB = gᵀ·h once transposed): sums of
//     outer products over k, a whole [m, strip] block of C in registers while op(B) streams past.
//     Columns split across threads, or the depth when C is too narrow to split (private partial
//     sums, added in a fixed order).
//   - small n with op(A) rows contiguous (h = x·Aᵀ, dh = g·B): dot products along k, k in the
//     vector lanes, reduced horizontally once per output. op(B) is packed k-major (it is tiny).
//     Rows split across threads.
// Every split depends only on the shape and the thread count, so results are deterministic.
// The kernels are written once against ISimd (Simd.cs) and specialised per ISA, like the
// microkernels; they are [AggressiveOptimization] because their tier-0 code (every vector
// operation an interface call) is tens of times slower, and a short run may never leave it.
internal static unsafe partial class Sgemm
{
    /// <summary>
    /// m or n at most this takes a thin path. Measured against the blocked path on one thread:
    /// at 32 the thin paths still win by 10-30% (the blocked path packs the whole large operand
    /// for 32 columns of work); at 64 they are within a few percent, and lose where the other
    /// dimension is small too.
    /// </summary>
    private const int SkinnyDim = 32;

    /// <summary>k at most this takes the rank-k update path (at 32 it is still a few percent ahead).</summary>
    private const int SkinnyDepth = 32;

    /// <summary>Depth block of the small-m path: the [kc, strip] slice of op(B) is reused by every block of rows from cache.</summary>
    private const int SkinnyKc = 256;

    /// <summary>Largest buffer (in floats, 64 MiB) a skinny path may pack or accumulate into.</summary>
    private const long MaxSkinnyFloats = 1 << 24;

    /// <summary>Fewer strips of C columns than this and the small-m path splits the depth, not the columns, across threads.</summary>
    private const int NarrowStrips = 4;

    /// <summary>Depth per chunk when the small-m path splits the depth.</summary>
    private const int SmallMDepthChunk = 512;

    /// <summary>At most this many depth chunks (partial copies of C).</summary>
    private const int MaxDepthChunks = 16;

    /// <summary>
    /// Whether the ISA has 32 vector registers (AVX-512, the only 16-float width): selects the larger register
    /// blocks. The 16-register blocks are sized so the accumulators and operands never spill.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool ManyRegisters<S, V>() where S : struct, ISimd<V> where V : struct => S.Width == 16;

    /// <summary>
    /// Whether the packers may use the AVX 8x8 transpose (as <see cref="IMicroKernel.UseAvx"/>): the 256- and
    /// 512-bit widths run only with <see cref="Avx2Kernel"/> / <see cref="Avx512Kernel"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool UseAvx<S, V>() where S : struct, ISimd<V> where V : struct => S.Width >= 8;

    /// <summary>Runs <paramref name="p"/> on a skinny path if one fits it; false leaves it to the blocked path.</summary>
    private static bool TryRunSkinny<S, V>(in Problem p, int maxThreads) where S : struct, ISimd<V> where V : struct
    {
        // The rank-k kernels pad n to whole strips of OuterCols: take them only where that
        // wastes at most an eighth of the work (below, the blocked path's narrower tiles win).
        int strip = OuterCols<S, V>();
        if (p.K <= SkinnyDepth && p.N >= 2 * strip && 8L * RoundUp(p.N, strip) <= 9L * p.N
            && (long)p.K * RoundUp(p.N, strip) <= MaxSkinnyFloats)
        {
            RunSmallDepth<S, V>(p, maxThreads);
            return true;
        }
        // Each thin path needs one operand contiguous along its long side; the transposed
        // problem (Cᵀ = op(B)ᵀ·op(A)ᵀ) turns the layouts it cannot take into ones it can.
        return TryRunThin<S, V>(p, maxThreads) || TryRunThin<S, V>(p.Transposed(), maxThreads);
    }

    /// <summary>
    /// The thin paths, where C is at most <see cref="SkinnyDim"/> rows (or columns) and at least
    /// four times that the other way: nearer square, the blocked path's tiles are well used and
    /// its packing is cheap by comparison.
    /// </summary>
    private static bool TryRunThin<S, V>(in Problem p, int maxThreads) where S : struct, ISimd<V> where V : struct
    {
        // Their buffers (packed op(B) of the dot products, the small-m path's private sums) grow
        // with the long dimension; past MaxSkinnyFloats the blocked path, which blocks everything, takes over.
        if (p.M <= SkinnyDim && p.N >= 4 * p.M && p.CsB == 1
            && (long)RoundUp(p.M, OuterRows<S, V>(smallDepth: false)) * (RoundUp(p.N, OuterCols<S, V>()) * 2L + MaxDepthChunks * NarrowStrips * OuterCols<S, V>()) <= MaxSkinnyFloats)
        {
            RunSmallM<S, V>(p, maxThreads);
            return true;
        }
        if (p.N <= SkinnyDim && p.M >= 4 * p.N && p.CsA == 1 && p.K >= S.Width
            && (long)RoundUp(p.N, DotCols<S, V>()) * RoundUp(p.K, S.Width) <= MaxSkinnyFloats)
        {
            RunSmallN<S, V>(p, maxThreads);
            return true;
        }
        return false;
    }

    /// <summary>Threads worth using: at least <see cref="MinFlopsPerThread"/> each, at most <paramref name="units"/>.</summary>
    private static int SkinnyThreads(in Problem p, int maxThreads, int units)
        => (int)Math.Clamp(Math.Min(2L * p.M * p.N * p.K / MinFlopsPerThread, units), 1, maxThreads);

    // ---- small n: dot products along k -------------------------------------------------

    /// <summary>Rows of C per dot-product block.</summary>
    private static int DotRows<S, V>() where S : struct, ISimd<V> where V : struct => ManyRegisters<S, V>() ? 3 : 2;

    /// <summary>Columns of C per dot-product block: the packed op(B) is grouped in blocks of this many columns.</summary>
    private static int DotCols<S, V>() where S : struct, ISimd<V> where V : struct => ManyRegisters<S, V>() ? 8 : 4;

    private static void RunSmallN<S, V>(Problem p, int maxThreads) where S : struct, ISimd<V> where V : struct
    {
        int rowBlock = DotRows<S, V>(), colBlock = DotCols<S, V>();
        int kPad = RoundUp(p.K, S.Width);
        var ws = Workspace.Rent();
        try
        {
            ws.Reserve(0, checked(RoundUp(p.N, colBlock) * kPad));
            float* bt = ws.B;
            PackDotB(p, S.Width, colBlock, kPad, bt);
            ForRowRanges(p, maxThreads, rowBlock, (i0, i1) => DotRange<S, V>(p, bt, i0, i1));
        }
        finally
        {
            Workspace.Return(ws);
        }
    }

    /// <summary>
    /// Runs <paramref name="range"/>(i0, i1) over row ranges of C cut on whole <paramref name="rowBlock"/> blocks: one range
    /// on the calling thread, or one per thread when the problem earns several (<see cref="SkinnyThreads"/>).
    /// </summary>
    private static void ForRowRanges(in Problem p, int maxThreads, int rowBlock, Action<int, int> range)
    {
        int m = p.M, parts = SkinnyThreads(p, maxThreads, CeilDiv(m, rowBlock));
        if (parts == 1)
        {
            range(0, m);
            return;
        }
        CpuParallel.For(parts, t =>
        {
            var (i0, i1) = Split(m, parts, t, rowBlock);
            range(i0, i1);
        });
    }

    /// <summary>
    /// Packs op(B) [k, n] for the dot-product kernels: ceil(n / colBlock) blocks, each
    /// [kPad / w steps][colBlock columns][w depths], so one step's vectors for all the block's
    /// columns sit next to each other. Columns past n are zero. When w does not divide k, the
    /// last step is the window [k - w, k), the one op(A) rows are read at, with the depths the
    /// step before already covered zeroed: no masked loads and no scalar tail.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackDotB(in Problem p, int w, int colBlock, int kPad, float* dst)
    {
        int k = p.K, kMain = k - k % w, steps = kPad / w;
        for (int j0 = 0; j0 < p.N; j0 += colBlock)
        {
            float* block = dst + (long)j0 * kPad; // j0 / colBlock blocks of colBlock * kPad
            for (int c = 0; c < colBlock; c++)
            {
                int j = j0 + c;
                float* src = p.B + j * p.CsB;
                for (int s = 0; s < steps; s++)
                {
                    float* d = block + (s * colBlock + c) * w;
                    int q = s * w;
                    if (j >= p.N)
                        new Span<float>(d, w).Clear();
                    else if (q + w <= k)
                        for (int t = 0; t < w; t++) d[t] = src[(q + t) * p.RsB];
                    else
                        for (int t = 0; t < w; t++)
                        {
                            int depth = k - w + t;
                            d[t] = depth >= kMain ? src[depth * p.RsB] : 0f;
                        }
                }
            }
        }
    }

    /// <summary>C[i0..i1, all n] by the dot-product kernels; <paramref name="bt"/> from <see cref="PackDotB"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotRange<S, V>(in Problem p, float* bt, int i0, int i1) where S : struct, ISimd<V> where V : struct
    {
        int rowBlock = DotRows<S, V>(), colBlock = DotCols<S, V>();
        int kPad = RoundUp(p.K, S.Width), kLast = p.K - S.Width;
        for (int i = i0; i < i1; i += rowBlock)
        {
            int rows = Math.Min(rowBlock, i1 - i);
            // Rows past the end repeat the last one; their sums are computed and dropped, so
            // the kernels need no edge variant.
            float* a0 = p.A + i * p.RsA;
            float* a1 = p.A + Math.Min(i + 1, i1 - 1) * p.RsA;
            float* a2 = p.A + Math.Min(i + 2, i1 - 1) * p.RsA;
            float* c = p.C + i * p.RsC;
            for (int j = 0; j < p.N; j += colBlock)
            {
                float* b = bt + (long)j * kPad;
                int cols = Math.Min(colBlock, p.N - j);
                if (ManyRegisters<S, V>())
                    Dot3x8<S, V>(kPad, kLast, a0, a1, a2, b, c + j * p.CsC, p.RsC, p.CsC, rows, cols, p.Alpha, p.Beta);
                else
                    Dot2x4<S, V>(kPad, kLast, a0, a1, b, c + j * p.CsC, p.RsC, p.CsC, rows, cols, p.Alpha, p.Beta);
            }
        }
    }

    /// <summary>
    /// 3 rows x 8 columns of dot products: 24 accumulators, and per step 3 loads of op(A), 8 of
    /// packed op(B) for 24 FMAs. Step q reads op(A) at min(q, kLast): the last, overlapping window.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot3x8<S, V>(int kPad, int kLast, float* a0, float* a1, float* a2, float* b,
        float* c, nint rsC, nint csC, int rows, int cols, float alpha, float beta) where S : struct, ISimd<V> where V : struct
    {
        int w = S.Width;
        V c00 = S.Zero, c01 = S.Zero, c02 = S.Zero, c03 = S.Zero, c04 = S.Zero, c05 = S.Zero, c06 = S.Zero, c07 = S.Zero;
        V c10 = S.Zero, c11 = S.Zero, c12 = S.Zero, c13 = S.Zero, c14 = S.Zero, c15 = S.Zero, c16 = S.Zero, c17 = S.Zero;
        V c20 = S.Zero, c21 = S.Zero, c22 = S.Zero, c23 = S.Zero, c24 = S.Zero, c25 = S.Zero, c26 = S.Zero, c27 = S.Zero;
        for (int q = 0; q < kPad; q += w, b += 8 * w)
        {
            int qa = Math.Min(q, kLast);
            V x0 = S.Load(a0 + qa), x1 = S.Load(a1 + qa), x2 = S.Load(a2 + qa);
            V bv;
            bv = S.Load(b + 0 * w); c00 = S.MultiplyAdd(x0, bv, c00); c10 = S.MultiplyAdd(x1, bv, c10); c20 = S.MultiplyAdd(x2, bv, c20);
            bv = S.Load(b + 1 * w); c01 = S.MultiplyAdd(x0, bv, c01); c11 = S.MultiplyAdd(x1, bv, c11); c21 = S.MultiplyAdd(x2, bv, c21);
            bv = S.Load(b + 2 * w); c02 = S.MultiplyAdd(x0, bv, c02); c12 = S.MultiplyAdd(x1, bv, c12); c22 = S.MultiplyAdd(x2, bv, c22);
            bv = S.Load(b + 3 * w); c03 = S.MultiplyAdd(x0, bv, c03); c13 = S.MultiplyAdd(x1, bv, c13); c23 = S.MultiplyAdd(x2, bv, c23);
            bv = S.Load(b + 4 * w); c04 = S.MultiplyAdd(x0, bv, c04); c14 = S.MultiplyAdd(x1, bv, c14); c24 = S.MultiplyAdd(x2, bv, c24);
            bv = S.Load(b + 5 * w); c05 = S.MultiplyAdd(x0, bv, c05); c15 = S.MultiplyAdd(x1, bv, c15); c25 = S.MultiplyAdd(x2, bv, c25);
            bv = S.Load(b + 6 * w); c06 = S.MultiplyAdd(x0, bv, c06); c16 = S.MultiplyAdd(x1, bv, c16); c26 = S.MultiplyAdd(x2, bv, c26);
            bv = S.Load(b + 7 * w); c07 = S.MultiplyAdd(x0, bv, c07); c17 = S.MultiplyAdd(x1, bv, c17); c27 = S.MultiplyAdd(x2, bv, c27);
        }
        MergeSums(S.Sum4(c00, c01, c02, c03), c, csC, cols, alpha, beta);
        MergeSums(S.Sum4(c04, c05, c06, c07), c + 4 * csC, csC, cols - 4, alpha, beta);
        if (rows < 2) return;
        c += rsC;
        MergeSums(S.Sum4(c10, c11, c12, c13), c, csC, cols, alpha, beta);
        MergeSums(S.Sum4(c14, c15, c16, c17), c + 4 * csC, csC, cols - 4, alpha, beta);
        if (rows < 3) return;
        c += rsC;
        MergeSums(S.Sum4(c20, c21, c22, c23), c, csC, cols, alpha, beta);
        MergeSums(S.Sum4(c24, c25, c26, c27), c + 4 * csC, csC, cols - 4, alpha, beta);
    }

    /// <summary>2 rows x 4 columns of dot products for 16-register ISAs: 8 accumulators, 6 loads per 8 FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot2x4<S, V>(int kPad, int kLast, float* a0, float* a1, float* b,
        float* c, nint rsC, nint csC, int rows, int cols, float alpha, float beta) where S : struct, ISimd<V> where V : struct
    {
        int w = S.Width;
        V c00 = S.Zero, c01 = S.Zero, c02 = S.Zero, c03 = S.Zero;
        V c10 = S.Zero, c11 = S.Zero, c12 = S.Zero, c13 = S.Zero;
        for (int q = 0; q < kPad; q += w, b += 4 * w)
        {
            int qa = Math.Min(q, kLast);
            V x0 = S.Load(a0 + qa), x1 = S.Load(a1 + qa);
            V bv;
            bv = S.Load(b + 0 * w); c00 = S.MultiplyAdd(x0, bv, c00); c10 = S.MultiplyAdd(x1, bv, c10);
            bv = S.Load(b + 1 * w); c01 = S.MultiplyAdd(x0, bv, c01); c11 = S.MultiplyAdd(x1, bv, c11);
            bv = S.Load(b + 2 * w); c02 = S.MultiplyAdd(x0, bv, c02); c12 = S.MultiplyAdd(x1, bv, c12);
            bv = S.Load(b + 3 * w); c03 = S.MultiplyAdd(x0, bv, c03); c13 = S.MultiplyAdd(x1, bv, c13);
        }
        MergeSums(S.Sum4(c00, c01, c02, c03), c, csC, cols, alpha, beta);
        if (rows < 2) return;
        MergeSums(S.Sum4(c10, c11, c12, c13), c + rsC, csC, cols, alpha, beta);
    }

    /// <summary>c[j * csC] = alpha * sums[j] + beta * c[j * csC] for j &lt; min(cols, 4); beta == 0 does not read c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MergeSums(Vector128<float> sums, float* c, nint csC, int cols, float alpha, float beta)
    {
        if (cols >= 4 && csC == 1)
        {
            var v = sums * alpha;
            if (beta != 0f) v += Vector128.Load(c) * beta;
            Vector128.Store(v, c);
            return;
        }
        for (int j = 0; j < Math.Min(cols, 4); j++)
        {
            float v = alpha * sums.GetElement(j);
            c[j * csC] = beta == 0f ? v : v + beta * c[j * csC];
        }
    }

    // ---- outer products: small m, and small k ------------------------------------------

    /// <summary>Rows of C per outer-product block.</summary>
    /// <remarks>
    /// On 16-register ISAs the rank-k path takes 6 rows (12 accumulators: its few steps per
    /// tile need the larger block to amortise the merge into C), the small-m path 4 (m is
    /// typically 8 or 16, which 6 would pad by a third).
    /// </remarks>
    private static int OuterRows<S, V>(bool smallDepth) where S : struct, ISimd<V> where V : struct
        => ManyRegisters<S, V>() ? 8 : smallDepth ? 6 : 4;

    /// <summary>Columns of C per outer-product block (a whole number of vectors).</summary>
    private static int OuterCols<S, V>() where S : struct, ISimd<V> where V : struct => (ManyRegisters<S, V>() ? 3 : 2) * S.Width;

    /// <summary>
    /// Packs op(A)[i..i+rows, kb..kb+kc] for the outer-product kernels as [kc][rowBlock]: the
    /// rowBlock values one depth step broadcasts are adjacent. Rows past <paramref name="rows"/> are zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackOuterA(in Problem p, int i, int rows, int rowBlock, int kb, int kc, float* dst, bool useAvx)
    {
        float* src = p.A + i * p.RsA + kb * p.CsA;
        if (p.RsA == 1)
        {
            // A stored [k, m]: one depth step's rows are already adjacent.
            for (int q = 0; q < kc; q++)
            {
                float* d = dst + q * rowBlock, s = src + q * p.CsA;
                for (int r = 0; r < rows; r++) d[r] = s[r];
                for (int r = rows; r < rowBlock; r++) d[r] = 0f;
            }
            return;
        }
        // A stored [m, k]: a [rows, kc] -> [kc, rows] transpose, 8x8 tiles at a time where AVX allows.
        Transpose(src, p.RsA, rows, kc, dst, rowBlock, useAvx);
        for (int r = rows; r < rowBlock; r++)
            for (int q = 0; q < kc; q++) dst[q * rowBlock + r] = 0f;
    }

    /// <summary>
    /// d[rowBlock, OuterCols] = alpha * Σ_q a[q, :]ᵀ ⊗ b[q, :] + beta * d over <paramref name="kc"/>
    /// steps, the whole block written (beta == 0 does not read d); a from <see cref="PackOuterA"/>,
    /// b rows <paramref name="ldb"/> apart with OuterCols readable floats each.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void OuterTile<S, V>(int kc, float* a, float* b, nint ldb, float* d, nint ldd, float alpha, float beta, bool smallDepth)
        where S : struct, ISimd<V> where V : struct
    {
        if (ManyRegisters<S, V>())
            Outer8x3<S, V>(kc, a, b, ldb, d, ldd, alpha, beta);
        else if (smallDepth)
            OuterRowsx2<S, V, Six>(kc, a, b, ldb, d, ldd, alpha, beta);
        else
            OuterRowsx2<S, V, Four>(kc, a, b, ldb, d, ldd, alpha, beta);
    }

    /// <summary>8 rows x 3 vectors: 24 accumulators, and per step 3 loads of B and 8 broadcasts for 24 FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Outer8x3<S, V>(int kc, float* a, float* b, nint ldb, float* d, nint ldd, float alpha, float beta)
        where S : struct, ISimd<V> where V : struct
    {
        int w = S.Width;
        // Decided before the loop: no call may follow it while the accumulators are live.
        int mode = FinishMode(alpha, beta);
        float* d1 = d + ldd, d2 = d1 + ldd, d3 = d2 + ldd, d4 = d3 + ldd, d5 = d4 + ldd, d6 = d5 + ldd, d7 = d6 + ldd;
        V c00 = S.Zero, c01 = S.Zero, c02 = S.Zero;
        V c10 = S.Zero, c11 = S.Zero, c12 = S.Zero;
        V c20 = S.Zero, c21 = S.Zero, c22 = S.Zero;
        V c30 = S.Zero, c31 = S.Zero, c32 = S.Zero;
        V c40 = S.Zero, c41 = S.Zero, c42 = S.Zero;
        V c50 = S.Zero, c51 = S.Zero, c52 = S.Zero;
        V c60 = S.Zero, c61 = S.Zero, c62 = S.Zero;
        V c70 = S.Zero, c71 = S.Zero, c72 = S.Zero;
        for (int q = 0; q < kc; q++, a += 8, b += ldb)
        {
            V b0 = S.Load(b), b1 = S.Load(b + w), b2 = S.Load(b + 2 * w);
            V ar;
            ar = S.Broadcast(a[0]); c00 = S.MultiplyAdd(ar, b0, c00); c01 = S.MultiplyAdd(ar, b1, c01); c02 = S.MultiplyAdd(ar, b2, c02);
            ar = S.Broadcast(a[1]); c10 = S.MultiplyAdd(ar, b0, c10); c11 = S.MultiplyAdd(ar, b1, c11); c12 = S.MultiplyAdd(ar, b2, c12);
            ar = S.Broadcast(a[2]); c20 = S.MultiplyAdd(ar, b0, c20); c21 = S.MultiplyAdd(ar, b1, c21); c22 = S.MultiplyAdd(ar, b2, c22);
            ar = S.Broadcast(a[3]); c30 = S.MultiplyAdd(ar, b0, c30); c31 = S.MultiplyAdd(ar, b1, c31); c32 = S.MultiplyAdd(ar, b2, c32);
            ar = S.Broadcast(a[4]); c40 = S.MultiplyAdd(ar, b0, c40); c41 = S.MultiplyAdd(ar, b1, c41); c42 = S.MultiplyAdd(ar, b2, c42);
            ar = S.Broadcast(a[5]); c50 = S.MultiplyAdd(ar, b0, c50); c51 = S.MultiplyAdd(ar, b1, c51); c52 = S.MultiplyAdd(ar, b2, c52);
            ar = S.Broadcast(a[6]); c60 = S.MultiplyAdd(ar, b0, c60); c61 = S.MultiplyAdd(ar, b1, c61); c62 = S.MultiplyAdd(ar, b2, c62);
            ar = S.Broadcast(a[7]); c70 = S.MultiplyAdd(ar, b0, c70); c71 = S.MultiplyAdd(ar, b1, c71); c72 = S.MultiplyAdd(ar, b2, c72);
        }
        if (mode == StoreOnly)
        {
            S.Store(c00, d); S.Store(c01, d + w); S.Store(c02, d + 2 * w);
            S.Store(c10, d1); S.Store(c11, d1 + w); S.Store(c12, d1 + 2 * w);
            S.Store(c20, d2); S.Store(c21, d2 + w); S.Store(c22, d2 + 2 * w);
            S.Store(c30, d3); S.Store(c31, d3 + w); S.Store(c32, d3 + 2 * w);
            S.Store(c40, d4); S.Store(c41, d4 + w); S.Store(c42, d4 + 2 * w);
            S.Store(c50, d5); S.Store(c51, d5 + w); S.Store(c52, d5 + 2 * w);
            S.Store(c60, d6); S.Store(c61, d6 + w); S.Store(c62, d6 + 2 * w);
            S.Store(c70, d7); S.Store(c71, d7 + w); S.Store(c72, d7 + 2 * w);
            return;
        }
        if (mode == AddTo)
        {
            AddTo3<S, V>(d, c00, c01, c02); AddTo3<S, V>(d1, c10, c11, c12);
            AddTo3<S, V>(d2, c20, c21, c22); AddTo3<S, V>(d3, c30, c31, c32);
            AddTo3<S, V>(d4, c40, c41, c42); AddTo3<S, V>(d5, c50, c51, c52);
            AddTo3<S, V>(d6, c60, c61, c62); AddTo3<S, V>(d7, c70, c71, c72);
            return;
        }
        V va = S.Broadcast(alpha), vb = S.Broadcast(beta);
        bool read = mode == Merge;
        Merge3<S, V>(d, c00, c01, c02, va, vb, read); Merge3<S, V>(d1, c10, c11, c12, va, vb, read);
        Merge3<S, V>(d2, c20, c21, c22, va, vb, read); Merge3<S, V>(d3, c30, c31, c32, va, vb, read);
        Merge3<S, V>(d4, c40, c41, c42, va, vb, read); Merge3<S, V>(d5, c50, c51, c52, va, vb, read);
        Merge3<S, V>(d6, c60, c61, c62, va, vb, read); Merge3<S, V>(d7, c70, c71, c72, va, vb, read);
    }

    /// <summary>
    /// 4 or 6 (<typeparamref name="TR"/>) rows x 2 vectors for 16-register ISAs: 8 or 12 accumulators, 2 loads and
    /// 4 or 6 broadcasts per 8 or 12 FMAs. TR is a JIT-time constant, so the guards on it fold away.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void OuterRowsx2<S, V, TR>(int kc, float* a, float* b, nint ldb, float* d, nint ldd, float alpha, float beta)
        where S : struct, ISimd<V> where V : struct where TR : struct, IConstant
    {
        int w = S.Width, rows = TR.Value;
        // Decided before the loop: no call may follow it while the accumulators are live.
        int mode = FinishMode(alpha, beta);
        float* d1 = d + ldd, d2 = d1 + ldd, d3 = d2 + ldd, d4 = d3 + ldd, d5 = d4 + ldd;
        V c00 = S.Zero, c01 = S.Zero;
        V c10 = S.Zero, c11 = S.Zero;
        V c20 = S.Zero, c21 = S.Zero;
        V c30 = S.Zero, c31 = S.Zero;
        V c40 = S.Zero, c41 = S.Zero;
        V c50 = S.Zero, c51 = S.Zero;
        for (int q = 0; q < kc; q++, a += rows, b += ldb)
        {
            V b0 = S.Load(b), b1 = S.Load(b + w);
            V ar;
            ar = S.Broadcast(a[0]); c00 = S.MultiplyAdd(ar, b0, c00); c01 = S.MultiplyAdd(ar, b1, c01);
            ar = S.Broadcast(a[1]); c10 = S.MultiplyAdd(ar, b0, c10); c11 = S.MultiplyAdd(ar, b1, c11);
            ar = S.Broadcast(a[2]); c20 = S.MultiplyAdd(ar, b0, c20); c21 = S.MultiplyAdd(ar, b1, c21);
            ar = S.Broadcast(a[3]); c30 = S.MultiplyAdd(ar, b0, c30); c31 = S.MultiplyAdd(ar, b1, c31);
            if (rows > 4)
            {
                ar = S.Broadcast(a[4]); c40 = S.MultiplyAdd(ar, b0, c40); c41 = S.MultiplyAdd(ar, b1, c41);
                ar = S.Broadcast(a[5]); c50 = S.MultiplyAdd(ar, b0, c50); c51 = S.MultiplyAdd(ar, b1, c51);
            }
        }
        if (mode == StoreOnly)
        {
            S.Store(c00, d); S.Store(c01, d + w);
            S.Store(c10, d1); S.Store(c11, d1 + w);
            S.Store(c20, d2); S.Store(c21, d2 + w);
            S.Store(c30, d3); S.Store(c31, d3 + w);
            if (rows > 4)
            {
                S.Store(c40, d4); S.Store(c41, d4 + w);
                S.Store(c50, d5); S.Store(c51, d5 + w);
            }
            return;
        }
        if (mode == AddTo)
        {
            AddTo2<S, V>(d, c00, c01); AddTo2<S, V>(d1, c10, c11);
            AddTo2<S, V>(d2, c20, c21); AddTo2<S, V>(d3, c30, c31);
            if (rows > 4)
            {
                AddTo2<S, V>(d4, c40, c41); AddTo2<S, V>(d5, c50, c51);
            }
            return;
        }
        V va = S.Broadcast(alpha), vb = S.Broadcast(beta);
        bool read = mode == Merge;
        Merge2<S, V>(d, c00, c01, va, vb, read); Merge2<S, V>(d1, c10, c11, va, vb, read);
        Merge2<S, V>(d2, c20, c21, va, vb, read); Merge2<S, V>(d3, c30, c31, va, vb, read);
        if (rows > 4)
        {
            Merge2<S, V>(d4, c40, c41, va, vb, read); Merge2<S, V>(d5, c50, c51, va, vb, read);
        }
    }

    // How an outer-product tile's accumulators are finished. A tile does only a few depth
    // steps, so the general alpha/beta merge (a multiply and an FMA per vector) would be a
    // fifth of its work; the common alpha == 1 cases skip it.
    private const int StoreOnly = 0; // alpha == 1, beta == 0: d = acc
    private const int AddTo = 1;     // alpha == 1, beta == 1: d += acc
    private const int Scale = 2;     // beta == 0: d = alpha * acc
    private const int Merge = 3;     // d = alpha * acc + beta * d

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FinishMode(float alpha, float beta)
        => beta == 0f ? (alpha == 1f ? StoreOnly : Scale)
        : alpha == 1f && beta == 1f ? AddTo : Merge;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo3<S, V>(float* d, V v0, V v1, V v2) where S : struct, ISimd<V> where V : struct
    {
        S.Store(S.Add(S.Load(d), v0), d);
        S.Store(S.Add(S.Load(d + S.Width), v1), d + S.Width);
        S.Store(S.Add(S.Load(d + 2 * S.Width), v2), d + 2 * S.Width);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo2<S, V>(float* d, V v0, V v1) where S : struct, ISimd<V> where V : struct
    {
        S.Store(S.Add(S.Load(d), v0), d);
        S.Store(S.Add(S.Load(d + S.Width), v1), d + S.Width);
    }

    /// <summary>d = alpha * v + beta * d per vector; d is read only when <paramref name="read"/> (beta != 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Merge3<S, V>(float* d, V v0, V v1, V v2, V alpha, V beta, bool read) where S : struct, ISimd<V> where V : struct
    {
        Merge2<S, V>(d, v0, v1, alpha, beta, read);
        MergeOne<S, V>(d + 2 * S.Width, v2, alpha, beta, read);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Merge2<S, V>(float* d, V v0, V v1, V alpha, V beta, bool read) where S : struct, ISimd<V> where V : struct
    {
        MergeOne<S, V>(d, v0, alpha, beta, read);
        MergeOne<S, V>(d + S.Width, v1, alpha, beta, read);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MergeOne<S, V>(float* d, V v, V alpha, V beta, bool read) where S : struct, ISimd<V> where V : struct
    {
        V r = S.Multiply(v, alpha);
        if (read) r = S.MultiplyAdd(S.Load(d), beta, r);
        S.Store(r, d);
    }

    // ---- small depth: rank-k update -----------------------------------------------------

    private static void RunSmallDepth<S, V>(Problem p, int maxThreads) where S : struct, ISimd<V> where V : struct
    {
        int rowBlock = OuterRows<S, V>(smallDepth: true), strip = OuterCols<S, V>();
        int nPad = RoundUp(p.N, strip);
        var ws = Workspace.Rent();
        try
        {
            // op(B) [k, n] is tiny: pack it once, zero-padded to whole strips, for every thread to share.
            ws.Reserve(0, checked(p.K * nPad));
            float* bp = ws.B;
            PackDepthB(p, strip, bp);
            ForRowRanges(p, maxThreads, rowBlock, (i0, i1) => SmallDepthRange<S, V>(p, bp, i0, i1));
        }
        finally
        {
            Workspace.Return(ws);
        }
    }

    /// <summary>
    /// op(B) as strips of [k, strip], each contiguous, columns past n zero. (Row-major [k, nPad]
    /// would give B the row stride of C, and a C tile's stores would then 4K-alias the loads of
    /// the next tile's B rows.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackDepthB(in Problem p, int strip, float* dst)
    {
        for (int j0 = 0; j0 < p.N; j0 += strip)
        {
            int cols = Math.Min(strip, p.N - j0);
            for (int q = 0; q < p.K; q++, dst += strip)
            {
                float* src = p.B + q * p.RsB + j0 * p.CsB;
                for (int j = 0; j < cols; j++) dst[j] = src[j * p.CsB];
                new Span<float>(dst + cols, strip - cols).Clear();
            }
        }
    }

    /// <summary>C[i0..i1, all n] = alpha * op(A) · B̃ + beta * C with B̃ the strips from <see cref="PackDepthB"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SmallDepthRange<S, V>(in Problem p, float* bp, int i0, int i1) where S : struct, ISimd<V> where V : struct
    {
        int rowBlock = OuterRows<S, V>(smallDepth: true), strip = OuterCols<S, V>();
        float* ap = stackalloc float[rowBlock * SkinnyDepth];
        float* tile = stackalloc float[rowBlock * strip];
        for (int i = i0; i < i1; i += rowBlock)
        {
            int rows = Math.Min(rowBlock, i1 - i);
            PackOuterA(p, i, rows, rowBlock, 0, p.K, ap, UseAvx<S, V>());
            for (int j = 0; j < p.N; j += strip)
            {
                int cols = Math.Min(strip, p.N - j);
                float* c = p.C + i * p.RsC + j * p.CsC;
                // A few depth steps per tile cannot hide the latency of reading (or owning)
                // C's lines: ask for the next tile's while this one computes.
                if (j + strip < p.N)
                    PrefetchTile(c + strip * p.CsC, p.RsC, rows, strip);
                else if (i + rowBlock < i1)
                    PrefetchTile(p.C + (i + rowBlock) * p.RsC, p.RsC, Math.Min(rowBlock, i1 - i - rowBlock), strip);
                float* b = bp + (long)j * p.K;
                if (rows == rowBlock && cols == strip && p.CsC == 1)
                    OuterTile<S, V>(p.K, ap, b, strip, c, p.RsC, p.Alpha, p.Beta, smallDepth: true);
                else
                {
                    OuterTile<S, V>(p.K, ap, b, strip, tile, strip, 1f, 0f, smallDepth: true);
                    MergeTile(tile, strip, rows, cols, c, p.RsC, p.CsC, p.Alpha, p.Beta);
                }
            }
        }
    }

    /// <summary>Prefetches rows x cols floats of C (row stride ld) into L1; a no-op off x86.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchTile(float* c, nint ld, int rows, int cols)
    {
        if (!Sse.IsSupported) return;
        for (int r = 0; r < rows; r++, c += ld)
            for (int j = 0; j < cols; j += 16)
                Sse.Prefetch0(c + j);
    }

    // ---- small m: outer products streaming op(B) ----------------------------------------

    private static void RunSmallM<S, V>(Problem p, int maxThreads) where S : struct, ISimd<V> where V : struct
    {
        int rowBlock = OuterRows<S, V>(smallDepth: false), strip = OuterCols<S, V>();
        int mPad = RoundUp(p.M, rowBlock), strips = CeilDiv(p.N, strip);
        int threads = SkinnyThreads(p, maxThreads, int.MaxValue);
        if (strips >= NarrowStrips)
        {
            // Wide enough to split the columns: each thread sums its columns over all of k
            // into a private [mPad, ldt] block (C may be strided, a transposed problem's C) and
            // writes them once, with alpha and beta.
            int parts = Math.Min(threads, strips);
            int ldt = CeilDiv(strips, parts) * strip;
            long partFloats = (long)mPad * ldt;
            var ws = Workspace.Rent();
            try
            {
                ws.Reserve(0, checked((int)(parts * partFloats)));
                float* sums = ws.B;
                if (parts == 1)
                {
                    SmallMPart<S, V>(p, 0, p.N, 0, p.K, sums, ldt);
                    MergeTile(sums, ldt, p.M, p.N, p.C, p.RsC, p.CsC, p.Alpha, p.Beta);
                    return;
                }
                CpuParallel.For(parts, t =>
                {
                    var (j0, j1) = Split(p.N, parts, t, strip);
                    float* part = sums + t * partFloats;
                    SmallMPart<S, V>(p, j0, j1, 0, p.K, part, ldt);
                    MergeTile(part, ldt, p.M, j1 - j0, p.C + j0 * p.CsC, p.RsC, p.CsC, p.Alpha, p.Beta);
                });
            }
            finally
            {
                Workspace.Return(ws);
            }
            return;
        }

        // Too narrow to split by columns: cut the depth into chunks fixed by k alone, sum each
        // into its own partial C, and add the partials in chunk order. The threads only decide
        // who computes which chunk, so the result is the same on any number of them.
        int chunks = Math.Clamp(p.K / SmallMDepthChunk, 1, MaxDepthChunks);
        int width = strips * strip;
        long chunkFloats = (long)mPad * width;
        var shared = Workspace.Rent();
        try
        {
            shared.Reserve(0, checked((int)(chunks * chunkFloats)));
            float* partials = shared.B;
            int workers = Math.Min(threads, chunks);
            void Work(int t)
            {
                var (c0, c1) = Split(chunks, workers, t, 1);
                for (int c = c0; c < c1; c++)
                {
                    var (k0, k1) = Split(p.K, chunks, c, 1);
                    SmallMPart<S, V>(p, 0, p.N, k0, k1, partials + c * chunkFloats, width);
                }
            }
            if (workers == 1)
                Work(0);
            else
                CpuParallel.For(workers, Work);
            for (int c = 1; c < chunks; c++)
            {
                float* partial = partials + c * chunkFloats;
                for (int i = 0; i < p.M; i++)
                    TensorPrimitives.Add(
                        new ReadOnlySpan<float>(partials + i * width, p.N), new ReadOnlySpan<float>(partial + i * width, p.N),
                        new Span<float>(partials + i * width, p.N));
            }
            MergeTile(partials, width, p.M, p.N, p.C, p.RsC, p.CsC, p.Alpha, p.Beta);
        }
        finally
        {
            Workspace.Return(shared);
        }
    }

    /// <summary>
    /// sums[mPad, j1 - j0] (row stride <paramref name="ldt"/>) = Σ over k in [k0, k1) of
    /// op(A)[:, k] ⊗ op(B)[k, j0..j1); op(B) rows must be contiguous (CsB == 1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SmallMPart<S, V>(in Problem p, int j0, int j1, int k0, int k1, float* sums, int ldt) where S : struct, ISimd<V> where V : struct
    {
        int rowBlock = OuterRows<S, V>(smallDepth: false), strip = OuterCols<S, V>();
        int mPad = RoundUp(p.M, rowBlock);
        int kcBlock = BalancedBlock(k1 - k0, SkinnyKc, 1);
        var ws = Workspace.Rent();
        try
        {
            ws.Reserve(mPad * kcBlock + kcBlock * strip, 0);
            float* ap = ws.A;                       // mPad / rowBlock blocks of [kc][rowBlock]
            float* tail = ws.A + mPad * kcBlock;    // a last, partial strip of op(B), zero-padded
            for (int kb = k0; kb < k1; kb += kcBlock)
            {
                int kc = Math.Min(kcBlock, k1 - kb);
                float beta = kb == k0 ? 0f : 1f;
                for (int i = 0; i < mPad; i += rowBlock)
                    PackOuterA(p, i, Math.Min(rowBlock, p.M - i), rowBlock, kb, kc, ap + i * kc, UseAvx<S, V>());
                for (int j = j0; j < j1; j += strip)
                {
                    int cols = Math.Min(strip, j1 - j);
                    float* b = p.B + kb * p.RsB + j;
                    nint ldb = p.RsB;
                    if (cols < strip)
                    {
                        for (int q = 0; q < kc; q++)
                        {
                            new ReadOnlySpan<float>(b + q * ldb, cols).CopyTo(new Span<float>(tail + q * strip, cols));
                            new Span<float>(tail + q * strip + cols, strip - cols).Clear();
                        }
                        b = tail;
                        ldb = strip;
                    }
                    for (int i = 0; i < mPad; i += rowBlock)
                        OuterTile<S, V>(kc, ap + i * kc, b, ldb, sums + i * ldt + (j - j0), ldt, 1f, beta, smallDepth: false);
                }
            }
        }
        finally
        {
            Workspace.Return(ws);
        }
    }
}
