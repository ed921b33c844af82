using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

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
/// Threads work on a grid of token-row ranges (whole microkernel panels) × vocabulary ranges. Each worker packs the
/// blocks of its vocabulary range for itself, so splitting only the rows would make every thread pack the whole head:
/// with few rows per thread (a 1B model on one sequence, many cores) that packing outweighs the products. Splitting the
/// vocabulary instead gives each vocabulary part its own running state and Σ exp·W per row, merged at the end like
/// FlashAttention's split-K (max of the maxes, sums and accumulators rescaled to it). <see cref="PlanThreads"/> picks the
/// grid that minimises one worker's products plus packing, within a memory cap on the extra accumulators.
/// </remarks>
internal static unsafe class LinearCrossEntropyKernel
{
    /// <summary>
    /// Most bytes of the two packed copies of a vocabulary block (for the logits and for the gradient). The block is the
    /// depth of the gradient product, and a deep one matters more than fitting L2: at hidden 2048, blocks of 256 rows
    /// (4 MiB) ran 13% faster than blocks of 64 (1 MiB), which lose time to the accumulator's per-block traffic.
    /// </summary>
    private const int PackedBlockBytes = 8 * 1024 * 1024;

    /// <summary>Most bytes of the accumulators that vocabulary parts beyond the first add (each is [rows, hidden]).</summary>
    private const long MaxPartialBytes = 64L * 1024 * 1024;

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
    internal static void Run(SgemmKernel kernel, float* x, HeadWeight weight, int* targets, int n, int ignoreIndex, float* losses, float* dx, float gradScale,
        (int RowParts, int VocabParts)? grid = null)
    {
        CrossEntropyKernel.ValidateTargets(targets, n, weight.Vocab, ignoreIndex);
        if (!Sgemm.IsSupported(kernel)) throw new PlatformNotSupportedException($"SGEMM kernel {kernel} is not supported on this CPU.");
        var problem = new Problem(x, weight, targets, n, ignoreIndex, losses, dx, gradScale);
        switch (kernel)
        {
            case SgemmKernel.Avx512: Run<Sgemm.Avx512Kernel>(problem, grid); break;
            case SgemmKernel.Avx2: Run<Sgemm.Avx2Kernel>(problem, grid); break;
            default: Run<Sgemm.PortableKernel>(problem, grid); break;
        }
    }

    /// <summary>Plans the worker grid (or takes <paramref name="grid"/>, for tests), runs the sweeps, then merges and finishes every row.</summary>
    private static void Run<TKernel>(Problem p, (int RowParts, int VocabParts)? grid) where TKernel : struct, Sgemm.IMicroKernel
    {
        if (p.N == 0) return;
        int mr = TKernel.MR, n = p.N, hidden = p.Weight.Hidden, vocab = p.Weight.Vocab;
        int panels = (n + mr - 1) / mr;
        var (rowParts, vocabParts) = grid ?? PlanThreads(n, hidden, vocab, mr, p.Weight.IsDense, p.Dx != null, CpuParallel.MaxThreads);
        rowParts = Math.Clamp(rowParts, 1, panels);
        vocabParts = Math.Clamp(vocabParts, 1, vocab); // every part holds at least one vocabulary row, so every state is written
        bool gradient = p.Dx != null;
        // Per vocabulary part: running max and Σ exp per row, and (beyond the first part, which accumulates in dx) Σ exp·W.
        long partialFloats = gradient ? (long)(vocabParts - 1) * n * hidden : 0;
        // Native memory, freed on return: a step's partial accumulators must not wait for the GC.
        float* start = (float*)NativeMemory.AlignedAlloc((nuint)((2L * vocabParts * n + n + partialFloats) * sizeof(float)), 64);
        try
        {
            var state = new SweepState(start, start + (long)vocabParts * n, start + 2L * vocabParts * n, start + 2L * vocabParts * n + n, n);
            CpuParallel.For(rowParts * vocabParts, item =>
            {
                int rowPart = item / vocabParts, vocabPart = item % vocabParts;
                int r0 = (int)((long)panels * rowPart / rowParts) * mr, r1 = Math.Min(n, (int)((long)panels * (rowPart + 1) / rowParts) * mr);
                int v0 = (int)((long)vocab * vocabPart / vocabParts), v1 = (int)((long)vocab * (vocabPart + 1) / vocabParts);
                if (r0 < r1 && v0 < v1) Sweep<TKernel>(p, state, vocabPart, r0, r1, v0, v1);
            });
            CpuParallel.ForRange(n, Math.Max(1, 4096 / hidden), (first, end) =>
            {
                float* wide = gradient && !p.Weight.IsDense ? (float*)NativeMemory.Alloc((nuint)hidden, sizeof(float)) : null;
                try
                {
                    for (int row = first; row < end; row++)
                        MergeAndFinish(p, state, vocabParts, row, wide);
                }
                finally
                {
                    NativeMemory.Free(wide);
                }
            });
        }
        finally
        {
            NativeMemory.AlignedFree(start);
        }
    }

    /// <summary>
    /// The worker grid (row parts × vocabulary parts, at most <paramref name="threads"/> workers) that minimises one
    /// worker's time, in rough cycles: its products (~32 flops a cycle), packing its vocabulary range (about an element a
    /// cycle per copy: two packs, and the widening of a 16-bit head) and its share of the merge.
    /// </summary>
    internal static (int RowParts, int VocabParts) PlanThreads(int n, int hidden, int vocab, int mr, bool dense, bool gradient, int threads)
    {
        int panels = (n + mr - 1) / mr;
        (int, int) best = (1, 1);
        double bestCost = double.MaxValue;
        for (int vocabParts = 1; vocabParts <= Math.Min(threads, vocab); vocabParts++)
        {
            if (gradient && (vocabParts - 1) * (long)n * hidden * sizeof(float) > MaxPartialBytes) break;
            int rowParts = Math.Min(threads / vocabParts, panels);
            double rows = (double)((panels + rowParts - 1) / rowParts) * mr;
            double vocabRows = Math.Ceiling((double)vocab / vocabParts);
            double products = (gradient ? 4.0 : 2.0) * rows * vocabRows * hidden / 32;
            double packing = ((gradient ? 2 : 1) + (dense ? 0 : 1)) * vocabRows * hidden;
            double merge = vocabParts > 1 ? (double)vocabParts * n * hidden / (rowParts * vocabParts) : 0;
            double cost = products + packing + merge;
            if (cost < bestCost * 0.98) // a clear gain, not noise in the model, for another vocabulary part
            {
                bestCost = cost;
                best = (rowParts, vocabParts);
            }
        }
        return best;
    }

    /// <summary>One worker's share: rows [r0, r1) against the vocabulary [v0, v1), into its part's running state.</summary>
    private static void Sweep<TKernel>(in Problem p, in SweepState state, int part, int r0, int r1, int vocabStart, int vocabEnd)
        where TKernel : struct, Sgemm.IMicroKernel
    {
        int mr = TKernel.MR, nr = TKernel.NR, kcMax = Sgemm.KC;
        int hidden = p.Weight.Hidden, rows = r1 - r0;
        bool gradient = p.Dx != null;
        int panels = (rows + mr - 1) / mr;
        var (_, kcBlock, blockRows, blockPad) = Blocking<TKernel>(hidden);
        float* runningMax = state.Max + (long)part * state.N + r0, runningSum = state.Sum + (long)part * state.N + r0; // [rows] each
        float* targetLogit = state.TargetLogit + r0;                                                                  // [rows]
        float* accumulated = part == 0 ? p.Dx : state.Partials + (long)(part - 1) * state.N * hidden;                  // [n, hidden]
        var (xPackedFloats, regions) = Scratch<TKernel>(rows, hidden, p.Weight.IsDense, gradient);
        // SGEMM's pooled pack buffers (x packed in A, the rest carved from B): the same memory SGEMM keeps anyway, no new
        // arrays per call for the GC to collect later.
        var workspace = Sgemm.Workspace.Rent();
        try
        {
            workspace.Reserve(checked((int)xPackedFloats), checked((int)regions.Sum(size => size + AlignFloats)));
            float* xPacked = workspace.A;                  // depthBlocks × panels micro-panels [mr, KC]: x rows, packed once
            float* cursor = workspace.B;
            float* logitB = Carve(ref cursor, regions[0]); // depth blocks of ⌈nb/nr⌉ micro-panels [kc, nr]: W_blockᵀ
            float* gradB = Carve(ref cursor, regions[1]);  // ⌈hidden/nr⌉ micro-panels [nb, nr]: W_block
            float* logits = Carve(ref cursor, regions[2]); // [mr, blockPad] one panel's logits for the block
            float* exps = Carve(ref cursor, regions[3]);   // [mr, KC] exp(logit − max) of the panel, as an A micro-panel
            float* wide = Carve(ref cursor, regions[4]);   // [blockRows, hidden] a 16-bit block widened
            float* tile = Carve(ref cursor, regions[5]);   // [mr, nr]

            for (int pc = 0, d = 0; pc < hidden; pc += kcBlock, d++)
                Sgemm.PackRowMajorA<TKernel>(p.X, hidden, r0, rows, pc, Math.Min(kcBlock, hidden - pc), xPacked + (long)d * panels * mr * kcMax);
            new Span<float>(runningMax, rows).Fill(float.NegativeInfinity);
            new Span<float>(runningSum, rows).Clear();
            if (gradient)
            {
                new Span<float>(exps, mr * kcMax).Clear(); // finite from the start: rows past a short panel feed only discarded tile rows
                new Span<float>(accumulated + (long)r0 * hidden, rows * hidden).Clear();
            }

            for (int v0 = vocabStart; v0 < vocabEnd; v0 += blockRows)
            {
                int nb = Math.Min(blockRows, vocabEnd - v0), nbPad = Sgemm.RoundUp(nb, nr);
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
                        FoldIntoRunningSoftmax(p, r0 + i0 + r, i0 + r, logits + r * blockPad, v0, nb, runningMax, runningSum, targetLogit,
                            gradient ? exps + r * kcMax : null, gradient ? accumulated + (long)(r0 + i0 + r) * hidden : null, hidden);
                    if (!gradient) continue;

                    // Σ exp·W of the panel [valid, hidden] += exps [mr, nb] · W_block [nb, hidden]
                    float* dxPanel = accumulated + (long)(r0 + i0) * hidden;
                    for (int jr = 0; jr < hidden; jr += nr)
                    {
                        int cols = Math.Min(nr, hidden - jr);
                        float* b = gradB + (long)jr * nb;
                        if (valid == mr && cols == nr) TKernel.Tile(nb, exps, b, dxPanel + jr, hidden, 1f, 1f);
                        else
                        {
                            TKernel.Tile(nb, exps, b, tile, nr, 1f, 0f);
                            Sgemm.MergeTile(tile, nr, valid, cols, dxPanel + jr, hidden, 1, 1f, 1f);
                        }
                    }
                }
            }
        }
        finally
        {
            Sgemm.Workspace.Return(workspace);
        }
    }

    /// <summary>Depth blocks of the hidden size (at most KC each) and the vocabulary block's rows (and padded to NR).</summary>
    private static (int DepthBlocks, int KcBlock, int BlockRows, int BlockPad) Blocking<TKernel>(int hidden) where TKernel : struct, Sgemm.IMicroKernel
    {
        int nr = TKernel.NR;
        int kcBlock = Sgemm.BalancedBlock(hidden, Sgemm.KC, 1);
        int blockRows = Math.Clamp(PackedBlockBytes / (2 * sizeof(float) * hidden) / nr * nr, nr, MaxBlockRows);
        return ((hidden + kcBlock - 1) / kcBlock, kcBlock, blockRows, Sgemm.RoundUp(blockRows, nr));
    }

    /// <summary>One worker's scratch, in floats: x's rows packed (SGEMM's A buffer) and the regions carved from its B buffer.</summary>
    private static (long XPacked, long[] Regions) Scratch<TKernel>(int rows, int hidden, bool dense, bool gradient) where TKernel : struct, Sgemm.IMicroKernel
    {
        int mr = TKernel.MR, nr = TKernel.NR;
        var (depthBlocks, _, blockRows, blockPad) = Blocking<TKernel>(hidden);
        long xPacked = (long)depthBlocks * ((rows + mr - 1) / mr) * mr * Sgemm.KC;
        long[] regions =
        [
            (long)blockPad * hidden,                             // packed W block for the logits
            gradient ? (long)Sgemm.RoundUp(hidden, nr) * blockRows : 0, // packed W block for the gradient
            (long)mr * blockPad,                                 // logits tile
            gradient ? (long)mr * Sgemm.KC : 0,                  // exponentials tile, packed as an A panel
            dense ? 0 : (long)blockRows * hidden,                // widened 16-bit W block
            (long)mr * nr,                                       // edge tile
        ];
        return (xPacked, regions);
    }

    /// <summary>
    /// Bytes a training step's head and loss over <paramref name="n"/> tokens holds beyond its inputs and outputs, on the
    /// fastest microkernel: every worker's pooled scratch (which SGEMM's pack buffers grow to) and the shared running
    /// state with the extra vocabulary parts' accumulators. For the memory model.
    /// </summary>
    internal static long WorkspaceBytes(int n, int hidden, int vocab, bool dense, int threads) => Sgemm.BestKernel switch
    {
        SgemmKernel.Avx512 => WorkspaceBytes<Sgemm.Avx512Kernel>(n, hidden, vocab, dense, threads),
        SgemmKernel.Avx2 => WorkspaceBytes<Sgemm.Avx2Kernel>(n, hidden, vocab, dense, threads),
        _ => WorkspaceBytes<Sgemm.PortableKernel>(n, hidden, vocab, dense, threads),
    };

    private static long WorkspaceBytes<TKernel>(int n, int hidden, int vocab, bool dense, int threads) where TKernel : struct, Sgemm.IMicroKernel
    {
        int mr = TKernel.MR, panels = (n + mr - 1) / mr;
        var (rowParts, vocabParts) = PlanThreads(n, hidden, vocab, mr, dense, gradient: true, threads);
        var (xPacked, regions) = Scratch<TKernel>((panels + rowParts - 1) / rowParts * mr, hidden, dense, gradient: true);
        long perWorker = xPacked + regions.Sum(size => size + AlignFloats);
        long shared = 2L * vocabParts * n + n + (vocabParts - 1L) * n * hidden;
        return (rowParts * vocabParts * perWorker + shared) * sizeof(float);
    }

    /// <summary>
    /// Folds one row's logits for the block [v0, v0+nb) into its running max and Σ exp; with the gradient, writes
    /// exp(logit − max) into <paramref name="exps"/> and rescales the row's running Σ exp·W when the max rose.
    /// </summary>
    private static void FoldIntoRunningSoftmax(in Problem p, int row, int local, float* logits, int v0, int nb,
        float* runningMax, float* runningSum, float* targetLogit, float* exps, float* accumulatedRow, int hidden)
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
            var accumulated = new Span<float>(accumulatedRow, hidden);                // Σ exp(l − oldMax)·W so far
            TensorPrimitives.Multiply(accumulated, correction, accumulated);
        }
    }

    /// <summary>
    /// Merges the row's vocabulary parts (max of the maxes; sums and Σ exp·W rescaled to it, into dx), then writes its
    /// loss and, with the gradient, dx = gradScale · (Σ exp·W / Σ − W_target).
    /// </summary>
    private static void MergeAndFinish(in Problem p, in SweepState state, int parts, int row, float* wide)
    {
        int target = p.Targets[row], hidden = p.Weight.Hidden;
        float max = float.NegativeInfinity;
        for (int part = 0; part < parts; part++) max = Math.Max(max, state.Max[(long)part * state.N + row]);
        var dx = p.Dx == null ? default : new Span<float>(p.Dx + (long)row * hidden, hidden);
        float sum = 0f;
        for (int part = 0; part < parts; part++)
        {
            float factor = MathF.Exp(state.Max[(long)part * state.N + row] - max);
            sum += state.Sum[(long)part * state.N + row] * factor;
            if (p.Dx == null || parts == 1) continue;
            if (part == 0) TensorPrimitives.Multiply(dx, factor, dx);
            else TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(state.Partials + ((long)(part - 1) * state.N + row) * hidden, hidden), factor, dx, dx);
        }
        bool ignored = target == p.IgnoreIndex;
        p.Losses[row] = ignored ? 0f : max + MathF.Log(sum) - state.TargetLogit[row];
        if (p.Dx == null) return;
        if (ignored)
        {
            dx.Clear();
            return;
        }
        TensorPrimitives.Multiply(dx, p.GradScale / sum, dx);
        var targetRow = new ReadOnlySpan<float>(p.Weight.Rows(target, 1, wide), hidden);
        TensorPrimitives.MultiplyAdd(targetRow, -p.GradScale, dx, dx);
    }

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

    /// <summary>The running state the workers share: per vocabulary part and row, max and Σ exp; the target logits; Σ exp·W of parts beyond the first.</summary>
    private readonly struct SweepState(float* max, float* sum, float* targetLogit, float* partials, int n)
    {
        public float* Max { get; } = max;                 // [parts, n]
        public float* Sum { get; } = sum;                 // [parts, n]
        public float* TargetLogit { get; } = targetLogit; // [n], written by the part that holds the target
        public float* Partials { get; } = partials;       // [parts − 1, n, hidden]
        public int N { get; } = n;
    }

    private const int AlignFloats = 16;

    /// <summary>A 64-byte-aligned region of <paramref name="floats"/> taken from <paramref name="cursor"/> onwards.</summary>
    private static float* Carve(ref float* cursor, long floats)
    {
        float* start = (float*)(((nint)cursor + 63) & ~(nint)63);
        cursor = start + floats;
        return start;
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
