using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// The output head and softmax cross-entropy as one sweep over the vocabulary that never stores the [n, vocab] logits.
/// The frozen head weight W [vocab, hidden] is taken a block of vocabulary rows at a time; for each block the logits of
/// a few input rows land in a cache-resident tile, are folded into every row's running max and Σ exp (online softmax,
/// as in FlashAttention) and, when the input gradient is wanted, their exponentials are multiplied straight back by the
/// same block of W into a running Σ_j exp(l_j − max)·W_j. At the end
/// <code>
///   loss = max + log Σ − l_target,      dx = gradScale · (Σ_j exp(l_j − max)·W_j / Σ − W_target)
/// </code>
/// which is gradScale · (softmax − onehot) · W without the softmax matrix. The two products per block are the flops the
/// unfused head spends on its forward and input-gradient GEMMs; what goes is the logits' storage and their four trips
/// through memory (written, read for the max, rewritten as the gradient, read by the backward GEMM). W's own gradient
/// needs the whole softmax, so a trainable head takes the unfused route (<see cref="Tensors.Ops.LinearCrossEntropy"/>).
/// </summary>
/// <remarks>
/// Threads split the rows (in whole microkernel panels) and each sweeps the whole vocabulary, so every row's running
/// state belongs to one thread and dx needs no reduction; each thread packs W's blocks for itself, which costs little
/// next to the products (one element moved per 4·rows/threads flops).
/// </remarks>
internal static unsafe class LinearCrossEntropyKernel
{
    /// <summary>Both packed copies of a vocabulary block (for the logits and for the gradient) are sized to share L2.</summary>
    private const int PackedBlockBytes = 1024 * 1024;

    /// <summary>Most vocabulary rows per block. The block is the depth of the gradient product, at most <see cref="Sgemm.KC"/>.</summary>
    private const int MaxBlockRows = 256;

    /// <summary>
    /// losses [n] of the logits x·Wᵀ against <paramref name="targets"/> (0 where the target is
    /// <paramref name="ignoreIndex"/>), and, when <paramref name="dx"/> is not null, dx [n, hidden] =
    /// gradScale · (softmax − onehot) · W (zero rows for ignored targets). x [n, hidden], W [vocab, hidden].
    /// </summary>
    public static void Run(float* x, HeadWeight weight, int* targets, int n, int ignoreIndex, float* losses, float* dx, float gradScale)
        => Run(Sgemm.BestKernel, x, weight, targets, n, ignoreIndex, losses, dx, gradScale);

    /// <summary><see cref="Run(float*, HeadWeight, int*, int, int, float*, float*, float)"/> on an explicitly chosen microkernel (for tests).</summary>
    internal static void Run(SgemmKernel kernel, float* x, HeadWeight weight, int* targets, int n, int ignoreIndex, float* losses, float* dx, float gradScale)
    {
        CrossEntropyKernel.ValidateTargets(targets, n, weight.Vocab, ignoreIndex);
        if (!Sgemm.IsSupported(kernel)) throw new PlatformNotSupportedException($"SGEMM kernel {kernel} is not supported on this CPU.");
        var problem = new Problem(x, weight, targets, n, ignoreIndex, losses, dx, gradScale);
        switch (kernel)
        {
            case SgemmKernel.Avx512: Run<Sgemm.Avx512Kernel>(problem); break;
            case SgemmKernel.Avx2: Run<Sgemm.Avx2Kernel>(problem); break;
            default: Run<Sgemm.PortableKernel>(problem); break;
        }
    }

    private static void Run<TKernel>(Problem p) where TKernel : struct, Sgemm.IMicroKernel
    {
        if (p.N == 0) return;
        int mr = TKernel.MR;
        int panels = (p.N + mr - 1) / mr;
        int threads = Math.Clamp(panels, 1, CpuParallel.MaxThreads);
        CpuParallel.For(threads, t =>
        {
            int first = (int)((long)panels * t / threads) * mr, end = Math.Min(p.N, (int)((long)panels * (t + 1) / threads) * mr);
            if (first < end) SweepRows<TKernel>(p, first, end);
        });
    }

    /// <summary>The whole computation for rows [r0, r1) on the calling thread.</summary>
    private static void SweepRows<TKernel>(in Problem p, int r0, int r1) where TKernel : struct, Sgemm.IMicroKernel
    {
        int mr = TKernel.MR, nr = TKernel.NR, kcMax = Sgemm.KC;
        int hidden = p.Weight.Hidden, vocab = p.Weight.Vocab, rows = r1 - r0;
        bool gradient = p.Dx != null;
        int panels = (rows + mr - 1) / mr;
        int depthBlocks = (hidden + kcMax - 1) / kcMax;
        int kcBlock = (hidden + depthBlocks - 1) / depthBlocks;
        int blockRows = Math.Clamp(PackedBlockBytes / (2 * sizeof(float) * hidden) / nr * nr, nr, MaxBlockRows);
        int blockPad = RoundUp(blockRows, nr);

        var arena = new Arena(
            (long)depthBlocks * panels * mr * kcMax,            // packed x
            (long)blockPad * hidden,                             // packed W block for the logits
            gradient ? (long)RoundUp(hidden, nr) * blockRows : 0, // packed W block for the gradient
            (long)mr * blockPad,                                 // logits tile
            gradient ? (long)mr * kcMax : 0,                     // exponentials tile, packed as an A panel
            p.Weight.IsDense ? 0 : (long)blockRows * hidden,    // widened 16-bit W block
            3L * rows,                                           // running max, Σ exp, target logit
            (long)mr * nr);                                      // edge tile
        fixed (float* arenaStart = arena.Store)
        {
            float* cursor = arenaStart;
            float* xPacked = arena.Next(ref cursor, 0);    // depthBlocks × panels micro-panels [mr, KC]: x rows, packed once
            float* logitB = arena.Next(ref cursor, 1);     // depth blocks of ⌈nb/nr⌉ micro-panels [kc, nr]: W_blockᵀ
            float* gradB = arena.Next(ref cursor, 2);      // ⌈hidden/nr⌉ micro-panels [nb, nr]: W_block
            float* logits = arena.Next(ref cursor, 3);     // [mr, blockPad] one panel's logits for the block
            float* exps = arena.Next(ref cursor, 4);       // [mr, KC] exp(logit − max) of the panel, as an A micro-panel
            float* wide = arena.Next(ref cursor, 5);       // [blockRows, hidden] a 16-bit block widened
            float* state = arena.Next(ref cursor, 6);
            float* tile = arena.Next(ref cursor, 7);       // [mr, nr]
            float* runningMax = state, runningSum = state + rows, targetLogit = state + 2 * rows; // [rows] each

            for (int pc = 0, d = 0; pc < hidden; pc += kcBlock, d++)
                Sgemm.PackRowMajorA<TKernel>(p.X, hidden, r0, rows, pc, Math.Min(kcBlock, hidden - pc), xPacked + (long)d * panels * mr * kcMax);
            new Span<float>(runningMax, rows).Fill(float.NegativeInfinity);
            new Span<float>(runningSum, rows * 2).Clear();
            if (gradient)
            {
                new Span<float>(exps, mr * kcMax).Clear(); // finite from the start: rows past a short panel feed only discarded tile rows
                new Span<float>(p.Dx + (long)r0 * hidden, rows * hidden).Clear();
            }

            for (int v0 = 0; v0 < vocab; v0 += blockRows)
            {
                int nb = Math.Min(blockRows, vocab - v0), nbPad = RoundUp(nb, nr);
                float* w = p.Weight.Rows(v0, nb, wide);                              // [nb, hidden]
                for (int pc = 0; pc < hidden; pc += kcBlock)
                    Sgemm.PackRowMajorB<TKernel>(w, hidden, transB: true, pc, Math.Min(kcBlock, hidden - pc), 0, nb, logitB + (long)pc * nbPad);
                if (gradient) Sgemm.PackRowMajorB<TKernel>(w, hidden, transB: false, 0, nb, 0, hidden, gradB);

                for (int panel = 0; panel < panels; panel++)
                {
                    int i0 = panel * mr, valid = Math.Min(mr, rows - i0);
                    // logits [mr, nb] = x_panel · W_blockᵀ, over the depth blocks
                    for (int pc = 0, d = 0; pc < hidden; pc += kcBlock, d++)
                    {
                        int kc = Math.Min(kcBlock, hidden - pc);
                        float* a = xPacked + ((long)d * panels + panel) * mr * kcMax;
                        float* b = logitB + (long)pc * nbPad;
                        for (int jr = 0; jr < nb; jr += nr)
                            TKernel.Tile(kc, a, b + (long)jr * kc, logits + jr, blockPad, 1f, pc == 0 ? 0f : 1f);
                    }
                    for (int r = 0; r < valid; r++)
                        FoldIntoRunningSoftmax(p, r0 + i0 + r, i0 + r, logits + r * blockPad, v0, nb,
                            runningMax, runningSum, targetLogit, gradient ? exps + r * kcMax : null, hidden);
                    if (!gradient) continue;

                    // dx_panel [valid, hidden] += exps [mr, nb] · W_block [nb, hidden]
                    float* dxPanel = p.Dx + (long)(r0 + i0) * hidden;
                    for (int jr = 0; jr < hidden; jr += nr)
                    {
                        int cols = Math.Min(nr, hidden - jr);
                        float* b = gradB + (long)jr * nb;
                        if (valid == mr && cols == nr) TKernel.Tile(nb, exps, b, dxPanel + jr, hidden, 1f, 1f);
                        else
                        {
                            TKernel.Tile(nb, exps, b, tile, nr, 1f, 0f);
                            for (int r = 0; r < valid; r++)
                                TensorPrimitives.Add(new ReadOnlySpan<float>(tile + r * nr, cols), new ReadOnlySpan<float>(dxPanel + (long)r * hidden + jr, cols),
                                    new Span<float>(dxPanel + (long)r * hidden + jr, cols));
                        }
                    }
                }
            }

            for (int r = 0; r < rows; r++)
                Finish(p, r0 + r, runningMax[r], runningSum[r], targetLogit[r], wide);
        }
    }

    /// <summary>
    /// Folds one row's logits for the block [v0, v0+nb) into its running max and Σ exp; with the gradient, writes
    /// exp(logit − max) into <paramref name="exps"/> and rescales the row's running Σ exp·W when the max rose.
    /// </summary>
    private static void FoldIntoRunningSoftmax(in Problem p, int row, int local, float* logits, int v0, int nb,
        float* runningMax, float* runningSum, float* targetLogit, float* exps, int hidden)
    {
        int target = p.Targets[row];
        if ((uint)(target - v0) < (uint)nb) targetLogit[local] = logits[target - v0];
        float oldMax = runningMax[local];
        float max = Math.Max(oldMax, SoftmaxKernel.RowMax(logits, nb));
        float correction = MathF.Exp(oldMax - max);                                   // 0 on the first block, 1 if the max held
        float blockSum = exps != null ? SoftmaxKernel.ExpShift(logits, exps, nb, max, 1f) : SoftmaxKernel.SumExpShift(logits, nb, max);
        runningSum[local] = runningSum[local] * correction + blockSum;
        runningMax[local] = max;
        if (exps != null && correction != 1f && oldMax != float.NegativeInfinity)
        {
            var accumulated = new Span<float>(p.Dx + (long)row * hidden, hidden);     // Σ exp(l − oldMax)·W so far
            TensorPrimitives.Multiply(accumulated, correction, accumulated);
        }
    }

    /// <summary>The row's loss and, with the gradient, dx = gradScale · (Σ exp·W / Σ − W_target).</summary>
    private static void Finish(in Problem p, int row, float max, float sum, float targetLogit, float* wide)
    {
        int target = p.Targets[row], hidden = p.Weight.Hidden;
        bool ignored = target == p.IgnoreIndex;
        p.Losses[row] = ignored ? 0f : max + MathF.Log(sum) - targetLogit;
        if (p.Dx == null) return;
        var dx = new Span<float>(p.Dx + (long)row * hidden, hidden);
        if (ignored)
        {
            dx.Clear();
            return;
        }
        TensorPrimitives.Multiply(dx, p.GradScale / sum, dx);
        var targetRow = new ReadOnlySpan<float>(p.Weight.Rows(target, 1, wide), hidden);
        TensorPrimitives.MultiplyAdd(targetRow, -p.GradScale, dx, dx);
    }

    private static int RoundUp(int x, int multiple) => (x + multiple - 1) / multiple * multiple;

    private readonly struct Problem(float* x, HeadWeight weight, int* targets, int n, int ignoreIndex, float* losses, float* dx, float gradScale)
    {
        public float* X { get; } = x;                 // [n, hidden]
        public HeadWeight Weight { get; } = weight;   // [vocab, hidden]
        public int* Targets { get; } = targets;       // [n]
        public int N { get; } = n;
        public int IgnoreIndex { get; } = ignoreIndex;
        public float* Losses { get; } = losses;       // [n]
        public float* Dx { get; } = dx;               // [n, hidden], or null
        public float GradScale { get; } = gradScale;
    }

    /// <summary>One thread's scratch: a single pinned array carved into 64-byte-aligned regions of the given float counts.</summary>
    private sealed class Arena
    {
        private const int AlignFloats = 16;
        private readonly long[] _sizes;

        public Arena(params long[] sizes)
        {
            _sizes = sizes;
            long total = sizes.Sum(s => s + AlignFloats) + AlignFloats;
            Store = GC.AllocateUninitializedArray<float>(checked((int)total), pinned: true);
        }

        public float[] Store { get; }

        /// <summary>Region <paramref name="index"/>, aligned, taken from <paramref name="cursor"/> onwards (regions in order).</summary>
        public float* Next(ref float* cursor, int index)
        {
            float* start = (float*)(((nint)cursor + 63) & ~(nint)63);
            cursor = start + _sizes[index];
            return start;
        }
    }
}

/// <summary>
/// A frozen head weight W [vocab, hidden] for <see cref="LinearCrossEntropyKernel"/>: dense float32 rows, read in place,
/// or 16-bit (bf16 / fp16) rows, widened a block at a time into the caller's scratch.
/// </summary>
internal readonly unsafe struct HeadWeight
{
    private readonly float* _dense;
    private readonly Float16TileSource _narrow;

    /// <summary>A dense float32 W [vocab, hidden].</summary>
    public HeadWeight(float* dense, int vocab, int hidden)
    {
        _dense = dense;
        Vocab = vocab;
        Hidden = hidden;
    }

    /// <summary>A 16-bit W.</summary>
    public HeadWeight(Float16TileSource narrow)
    {
        _narrow = narrow;
        Vocab = narrow.Rows;
        Hidden = narrow.Columns;
    }

    public int Vocab { get; }

    public int Hidden { get; }

    public bool IsDense => _dense != null;

    /// <summary>Rows [r0, r0 + rows) as float32 [rows, hidden]: in place when dense, else widened into <paramref name="scratch"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float* Rows(int r0, int rows, float* scratch)
    {
        if (_dense != null) return _dense + (long)r0 * Hidden;
        _narrow.DecodeTile(r0, rows, 0, Hidden, scratch, Hidden);
        return scratch;
    }
}
