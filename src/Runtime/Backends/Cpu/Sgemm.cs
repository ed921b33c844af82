using System.Numerics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftGen.Backends.Cpu;

/// <summary>The microkernel family (and matching packing routines) an SGEMM call runs on.</summary>
internal enum SgemmKernel
{
    /// <summary><see cref="System.Numerics.Vector{T}"/> code; correct on every platform.</summary>
    Portable,

    /// <summary>256-bit AVX2 + FMA3 microkernel.</summary>
    Avx2,

    /// <summary>512-bit AVX-512F microkernel.</summary>
    Avx512,
}

/// <summary>
/// Single-precision matrix multiply, C = alpha * op(A) · op(B) + beta * C, all row-major.
/// </summary>
/// <remarks>
/// GotoBLAS/BLIS structure. For each [KC, NC] block of op(B) and [MC, KC] block of op(A):
/// pack both into contiguous, aligned micro-panels (this is where the transposes are absorbed),
/// then sweep a register-blocked MR x NR microkernel over the packed panels. The B micro-panel
/// ([KC, NR]) stays in L1 while A micro-panels stream from the L2-resident packed A block.
/// Threads each own a rectangle of C and run the whole blocked algorithm on it, so they never
/// synchronise beyond the final join. Problems with one tiny dimension (m or n at most 32 against
/// a long other side, or k at most 32: what LoRA's rank gives) skip all that for the skinny paths,
/// which stream the large operand once without packing it. Files: this one holds the API, the
/// threading plan and the blocked loops; Sgemm.Pack.cs the packing; Sgemm.Avx512.cs, Sgemm.Avx2.cs,
/// Sgemm.Portable.cs the microkernels; Sgemm.Skinny.cs the skinny paths and Simd.cs (shared with
/// the attention kernel) the vector operations they are written against.
/// </remarks>
internal static unsafe partial class Sgemm
{
    /// <summary>
    /// Largest depth of one packed block. Packed A micro-panels are stored as [MR, KC] with this
    /// fixed row stride so the microkernel can address all MR rows with constant displacements.
    /// </summary>
    internal const int KC = 384;

    /// <summary>
    /// Depth per block once k has to be split. Every extra block is one more read-modify-write
    /// pass over C, so k &lt;= KC is done in one block; deeper problems use shorter blocks,
    /// which keep the [kc, NR] B micro-panel comfortably inside L1.
    /// </summary>
    private const int KcSplit = 256;

    /// <summary>Bytes of packed A block ([MC, kc]) to aim for: about a third of a 1 MiB L2.</summary>
    private const int PackedABytes = 384 * 1024;

    /// <summary>Columns of one packed B block ([kc, NC], 4 MiB at kc = 256): lives in L3, reused by every MC block.</summary>
    private const int NC = 4096;

    /// <summary>Below this many flops per thread, the fan-out costs more than it saves.</summary>
    private const long MinFlopsPerThread = 2_000_000;

    /// <summary>The fastest kernel this CPU supports; what <see cref="Multiply(bool, bool, int, int, int, float, float*, int, float*, int, float, float*, int)"/> uses.</summary>
    internal static SgemmKernel BestKernel { get; } =
        Avx512F.IsSupported ? SgemmKernel.Avx512
        : Avx2.IsSupported && Fma.IsSupported ? SgemmKernel.Avx2
        : SgemmKernel.Portable;

    /// <summary>Whether <paramref name="kernel"/> can run on this CPU.</summary>
    internal static bool IsSupported(SgemmKernel kernel) => kernel switch
    {
        SgemmKernel.Avx512 => Avx512F.IsSupported,
        SgemmKernel.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        _ => true,
    };

    /// <summary>
    /// C[m, n] = alpha * op(A)[m, k] · op(B)[k, n] + beta * C, all row-major.
    /// op(A) = A when !<paramref name="transA"/> (A stored [m, k], lda &gt;= k), else Aᵀ (A stored [k, m], lda &gt;= m).
    /// op(B) = B when !<paramref name="transB"/> (B stored [k, n], ldb &gt;= n), else Bᵀ (B stored [n, k], ldb &gt;= k).
    /// beta == 0 never reads C (it may hold NaN garbage); k == 0 or alpha == 0 leaves C = beta * C.
    /// Runs on up to <see cref="CpuParallel.MaxThreads"/> threads.
    /// </summary>
    public static void Multiply(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
        => Multiply(BestKernel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);

    /// <summary>
    /// <see cref="Multiply(bool, bool, int, int, int, float, float*, int, float*, int, float, float*, int)"/>
    /// on an explicitly chosen kernel, so tests can exercise every code path on one machine.
    /// </summary>
    internal static void Multiply(SgemmKernel kernel, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        var problem = Problem.Create(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        Execute(Validate(kernel), problem, CpuParallel.MaxThreads);
    }

    /// <summary>
    /// <paramref name="batch"/> independent multiplies; problem i uses a + i*strideA, b + i*strideB,
    /// c + i*strideC (element strides). A stride of 0 broadcasts one matrix to every problem;
    /// strideC == 0 accumulates the problems into one C in order (pass beta = 1 to sum them all).
    /// </summary>
    public static void MultiplyBatched(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, long strideA, float* b, int ldb, long strideB, float beta, float* c, int ldc, long strideC, int batch)
        => MultiplyBatched(BestKernel, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);

    /// <summary>
    /// <see cref="MultiplyBatched(bool, bool, int, int, int, float, float*, int, long, float*, int, long, float, float*, int, long, int)"/>
    /// on an explicitly chosen kernel.
    /// </summary>
    internal static void MultiplyBatched(SgemmKernel kernel, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, long strideA, float* b, int ldb, long strideB, float beta, float* c, int ldc, long strideC, int batch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        var first = Problem.Create(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        Validate(kernel);
        int threads = CpuParallel.MaxThreads;
        long flops = 2L * m * n * k;

        // Many problems, or ones too small to give every thread a few times MinFlopsPerThread:
        // one thread per problem beats splitting each one. A shared C (strideC == 0) must be
        // updated in order, so it always takes the sequential loop.
        bool perProblemThreads = threads > 1 && batch > 1 && strideC != 0
            && (batch >= 2 * threads || flops < threads * MinFlopsPerThread * 4);
        if (!perProblemThreads)
        {
            for (int i = 0; i < batch; i++)
                Execute(kernel, first.Offset(i * strideA, i * strideB, i * strideC), threads);
            return;
        }
        CpuParallel.For(batch, i => Execute(kernel, first.Offset(i * strideA, i * strideB, i * strideC), 1));
    }

    private static SgemmKernel Validate(SgemmKernel kernel)
    {
        if (!IsSupported(kernel))
            throw new PlatformNotSupportedException($"SGEMM kernel {kernel} is not supported on this CPU.");
        return kernel;
    }

    private static void Execute(SgemmKernel kernel, Problem p, int maxThreads)
    {
        if (p.M == 0 || p.N == 0) return;
        if (p.K == 0 || p.Alpha == 0f)
        {
            ScaleC(p, p.Beta);
            return;
        }
        switch (kernel)
        {
            // A problem with one tiny dimension (LoRA's rank) goes to a skinny path when one fits it.
            case SgemmKernel.Avx512:
                if (!TryRunSkinny<Simd512, Vector512<float>>(p, maxThreads)) Run<Avx512Kernel>(p, maxThreads);
                break;
            case SgemmKernel.Avx2:
                if (!TryRunSkinny<Simd256, Vector256<float>>(p, maxThreads)) Run<Avx2Kernel>(p, maxThreads);
                break;
            default:
                if (!TryRunSkinny<Simd128, Vector128<float>>(p, maxThreads)) Run<PortableKernel>(p, maxThreads);
                break;
        }
    }

    /// <summary>Picks the orientation and the thread grid, then runs the blocked loops per thread.</summary>
    private static void Run<TKernel>(Problem p, int maxThreads) where TKernel : struct, IMicroKernel
    {
        // The microkernel is much wider (NR) than tall (MR) on x86. When n is narrower than
        // NR (LoRA rank 8), compute Cᵀ = op(B)ᵀ · op(A)ᵀ instead so the wide side is not
        // mostly padding. C is then written through the scalar strided tile merge, so only
        // switch for a clear (> 10%) gain in useful tile area.
        if (TileUse(p.N, TKernel.MR) * TileUse(p.M, TKernel.NR) > 1.1 * TileUse(p.M, TKernel.MR) * TileUse(p.N, TKernel.NR))
            p = p.Transposed();

        var (rowParts, colParts) = PlanThreads<TKernel>(p, maxThreads);
        if (rowParts * colParts == 1)
        {
            RunRect<TKernel>(p, 0, p.M, 0, p.N);
            return;
        }
        CpuParallel.For(rowParts * colParts, t =>
        {
            var (i0, i1) = Split(p.M, rowParts, t / colParts, TKernel.MR);
            var (j0, j1) = Split(p.N, colParts, t % colParts, TKernel.NR);
            RunRect<TKernel>(p, i0, i1, j0, j1);
        });
    }

    /// <summary>Fraction of a dimension's tiles that is real data rather than padding.</summary>
    private static double TileUse(int size, int tile) => (double)size / RoundUp(size, tile);

    /// <summary>
    /// Chooses how many threads to use and how to lay them out as a rowParts x colParts grid over C.
    /// Each thread packs the op(A) rows and op(B) columns of its own rectangle, so the grid that
    /// minimises the time of the slowest thread (its compute plus its packing) wins.
    /// </summary>
    private static (int RowParts, int ColParts) PlanThreads<TKernel>(in Problem p, int maxThreads) where TKernel : struct, IMicroKernel
    {
        int rowTiles = CeilDiv(p.M, TKernel.MR), colTiles = CeilDiv(p.N, TKernel.NR);
        long flops = 2L * p.M * p.N * p.K;
        int threads = (int)Math.Clamp(flops / MinFlopsPerThread, 1, maxThreads);

        (int, int) best = (1, 1);
        double bestCost = double.MaxValue;
        for (int rowParts = 1; rowParts <= Math.Min(threads, rowTiles); rowParts++)
        {
            int colParts = Math.Min(threads / rowParts, colTiles);
            double rows = (double)CeilDiv(rowTiles, rowParts) * TKernel.MR;
            double cols = (double)CeilDiv(colTiles, colParts) * TKernel.NR;
            // In cycles, roughly: the microkernel retires ~64 flops per cycle (2 * rows*cols*k / 64)
            // and packing moves about one element per cycle. A is repacked for every NC block.
            double cost = rows * cols * p.K / 32 + cols * p.K + rows * p.K * Math.Ceiling(cols / NC);
            if (cost < bestCost)
            {
                bestCost = cost;
                best = (rowParts, colParts);
            }
        }
        return best;
    }

    /// <summary>
    /// The blocked GotoBLAS loops over one rectangle C[i0..i1, j0..j1] on the calling thread.
    /// </summary>
    private static void RunRect<TKernel>(in Problem p, int i0, int i1, int j0, int j1) where TKernel : struct, IMicroKernel
    {
        int mr = TKernel.MR, nr = TKernel.NR;
        int kcBlock = p.K <= KC ? p.K : BalancedBlock(p.K, KcSplit, 1);
        // Size the packed A block by the kc columns it fills (that is what occupies L2), but cap
        // it: every micro-panel reserves the whole KC stride, and a tiny k would otherwise reserve
        // megabytes it never touches.
        int aPanels = Math.Clamp(PackedABytes / (mr * kcBlock * sizeof(float)), 1, 4 * PackedABytes / (mr * KC * sizeof(float)));
        int mcBlock = BalancedBlock(i1 - i0, aPanels * mr, mr);
        int ncBlock = BalancedBlock(j1 - j0, NC, nr);
        bool directC = p.CsC == 1;
        float* tile = stackalloc float[mr * nr]; // [MR, NR] accumulators of an edge tile

        var ws = Workspace.Rent();
        try
        {
            ws.Reserve(mcBlock * KC, kcBlock * ncBlock);
            float* packedA = ws.A; // MC/MR micro-panels of [MR, KC]
            float* packedB = ws.B; // NC/NR micro-panels of [kc, NR]
            for (int jc = j0; jc < j1; jc += ncBlock)
            {
                int nc = Math.Min(ncBlock, j1 - jc);
                for (int pc = 0; pc < p.K; pc += kcBlock)
                {
                    int kc = Math.Min(kcBlock, p.K - pc);
                    // Later depth blocks accumulate onto what the first one wrote.
                    float beta = pc == 0 ? p.Beta : 1f;
                    PackB<TKernel>(p, pc, kc, jc, nc, packedB);
                    for (int ic = i0; ic < i1; ic += mcBlock)
                    {
                        int mc = Math.Min(mcBlock, i1 - ic);
                        PackA<TKernel>(p, ic, mc, pc, kc, packedA);
                        for (int jr = 0; jr < nc; jr += nr)
                        {
                            int cols = Math.Min(nr, nc - jr);
                            float* bPanel = packedB + (long)jr * kc;
                            for (int ir = 0; ir < mc; ir += mr)
                            {
                                int rows = Math.Min(mr, mc - ir);
                                float* aPanel = packedA + (long)ir * KC;
                                float* cTile = p.C + (ic + ir) * p.RsC + (jc + jr) * p.CsC;
                                if (directC && rows == mr && cols == nr)
                                {
                                    TKernel.Tile(kc, aPanel, bPanel, cTile, p.RsC, p.Alpha, beta);
                                }
                                else
                                {
                                    TKernel.Tile(kc, aPanel, bPanel, tile, nr, 1f, 0f);
                                    MergeTile(tile, nr, rows, cols, cTile, p.RsC, p.CsC, p.Alpha, beta);
                                }
                            }
                        }
                    }
                }
            }
        }
        finally
        {
            Workspace.Return(ws);
        }
    }

    /// <summary>C[rows, cols] (general strides) = alpha * tile + beta * C; beta == 0 does not read C.</summary>
    internal static void MergeTile(float* tile, int ldt, int rows, int cols, float* c, nint rsC, nint csC, float alpha, float beta)
    {
        for (int i = 0; i < rows; i++)
        {
            float* t = tile + i * ldt;
            float* ci = c + i * rsC;
            if (beta == 0f)
                for (int j = 0; j < cols; j++) ci[j * csC] = alpha * t[j];
            else
                for (int j = 0; j < cols; j++) ci[j * csC] = alpha * t[j] + beta * ci[j * csC];
        }
    }

    /// <summary>C = beta * C over the whole problem; beta == 0 writes zeros without reading C.</summary>
    private static void ScaleC(in Problem p, float beta)
    {
        if (beta == 1f) return;
        for (int i = 0; i < p.M; i++)
        {
            float* ci = p.C + i * p.RsC;
            for (int j = 0; j < p.N; j++)
                ci[j * p.CsC] = beta == 0f ? 0f : beta * ci[j * p.CsC];
        }
    }

    /// <summary>Part <paramref name="index"/> of <paramref name="parts"/> near-equal ranges of [0, count), cut on multiples of <paramref name="granule"/>.</summary>
    private static (int Start, int End) Split(int count, int parts, int index, int granule)
    {
        int units = CeilDiv(count, granule);
        int start = (int)((long)units * index / parts) * granule;
        int end = (int)((long)units * (index + 1) / parts) * granule;
        return (Math.Min(start, count), Math.Min(end, count));
    }

    /// <summary>
    /// Block size for covering <paramref name="size"/> in ceil(size / max) equal blocks, rounded up to
    /// <paramref name="granule"/>: k = 288 with KC = 256 gives two blocks of 144, not 256 + 32.
    /// </summary>
    internal static int BalancedBlock(int size, int max, int granule)
    {
        int blocks = Math.Max(1, CeilDiv(size, max));
        return Math.Max(granule, RoundUp(CeilDiv(size, blocks), granule));
    }

    private static int CeilDiv(int x, int y) => (x + y - 1) / y;

    internal static int RoundUp(int x, int multiple) => CeilDiv(x, multiple) * multiple;

    /// <summary>
    /// One GEMM in stride form: op(A)[i, p] = A[i*RsA + p*CsA], op(B)[p, j] = B[p*RsB + j*CsB],
    /// C[i, j] = C[i*RsC + j*CsC]. Transposes are just swapped strides, and one of each pair is 1.
    /// </summary>
    private readonly struct Problem
    {
        public int M { get; init; }
        public int N { get; init; }
        public int K { get; init; }
        public float Alpha { get; init; }
        public float Beta { get; init; }
        public float* A { get; init; }
        public nint RsA { get; init; }
        public nint CsA { get; init; }
        public float* B { get; init; }
        public nint RsB { get; init; }
        public nint CsB { get; init; }
        public float* C { get; init; }
        public nint RsC { get; init; }
        public nint CsC { get; init; }

        public static Problem Create(bool transA, bool transB, int m, int n, int k, float alpha,
            float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(m);
            ArgumentOutOfRangeException.ThrowIfNegative(n);
            ArgumentOutOfRangeException.ThrowIfNegative(k);
            ArgumentOutOfRangeException.ThrowIfLessThan(lda, Math.Max(1, transA ? m : k));
            ArgumentOutOfRangeException.ThrowIfLessThan(ldb, Math.Max(1, transB ? k : n));
            ArgumentOutOfRangeException.ThrowIfLessThan(ldc, Math.Max(1, n));
            return new Problem
            {
                M = m, N = n, K = k, Alpha = alpha, Beta = beta,
                A = a, RsA = transA ? 1 : lda, CsA = transA ? lda : 1,
                B = b, RsB = transB ? 1 : ldb, CsB = transB ? ldb : 1,
                C = c, RsC = ldc, CsC = 1,
            };
        }

        /// <summary>The same problem with every matrix advanced by an element offset.</summary>
        public Problem Offset(long a, long b, long c) => this with { A = A + a, B = B + b, C = C + c };

        /// <summary>Cᵀ[n, m] = op(B)ᵀ · op(A)ᵀ: the same result, computed with the roles of m and n swapped.</summary>
        public Problem Transposed() => this with
        {
            M = N, N = M,
            A = B, RsA = CsB, CsA = RsB,
            B = A, RsB = CsA, CsB = RsA,
            RsC = CsC, CsC = RsC,
        };
    }
}
