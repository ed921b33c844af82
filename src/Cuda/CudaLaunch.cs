namespace PeftGen.Backends.Cuda;

/// <summary>A kernel launch shape: grid and block dimensions and dynamic shared memory.</summary>
/// <param name="GridX">Blocks along x.</param>
/// <param name="GridY">Blocks along y.</param>
/// <param name="BlockX">Threads per block.</param>
/// <param name="SharedBytes">Dynamic shared memory per block.</param>
internal readonly record struct LaunchConfig(int GridX, int GridY, int BlockX, int SharedBytes = 0)
{
    /// <summary>
    /// Throws unless the shape is within CUDA's limits for every device this backend runs on (grid x up to 2³¹ − 1, grid y
    /// up to 65,535, up to 1,024 threads per block), so an oversized problem fails with the kernel's name and the sizes
    /// rather than with a bare launch error.
    /// </summary>
    /// <exception cref="NotSupportedException">A dimension is out of range.</exception>
    public void Validate(string kernel)
    {
        if (GridX < 1 || GridY < 1 || GridY > CudaLaunch.MaxGridY || BlockX < 1 || BlockX > CudaLaunch.MaxThreadsPerBlock || SharedBytes < 0)
            throw new NotSupportedException(
                $"Kernel {kernel}: launch shape grid {GridX}x{GridY}, block {BlockX}, {SharedBytes} bytes of shared memory is outside CUDA's limits " +
                $"(grid x 1..{int.MaxValue}, grid y 1..{CudaLaunch.MaxGridY}, block 1..{CudaLaunch.MaxThreadsPerBlock}); the problem is too large for this kernel.");
    }
}

/// <summary>
/// Launch shapes of the kernels, as pure functions of the problem size and device limits (so they are tested on the
/// CPU). Grid-stride kernels get at most <see cref="MaxBlocksPerSm"/> blocks per multiprocessor.
/// </summary>
internal static class CudaLaunch
{
    /// <summary>The largest grid y dimension CUDA allows.</summary>
    public const int MaxGridY = 65_535;

    /// <summary>The most threads a block may have.</summary>
    public const int MaxThreadsPerBlock = 1024;

    /// <summary>Threads per block of elementwise kernels.</summary>
    public const int ElementwiseThreads = 256;

    /// <summary>Blocks per multiprocessor a grid-stride launch is capped at.</summary>
    public const int MaxBlocksPerSm = 32;

    /// <summary>Threads per block of the attention kernels (8 warps: 8 query or key rows).</summary>
    public const int AttentionThreads = 256;

    /// <summary>Rows per attention block.</summary>
    public const int AttentionRows = 8;

    /// <summary>Keys or queries per shared-memory tile.</summary>
    public const int AttentionTile = 32;

    /// <summary>Largest head size the attention kernels take.</summary>
    public const int AttentionMaxHeadSize = 128;

    /// <summary>Elements per block of the 8-bit optimizer (one CUDA block each).</summary>
    public const int AdamW8bitBlock = 256;

    /// <summary>Elements per chunk (one CUDA block) of the multi-tensor AdamW.</summary>
    public const int AdamWChunk = 4096;

    /// <summary>Rows of x the fused 4-bit GEMV handles per launch.</summary>
    public const int GemvMaxRows = 8;

    /// <summary>A grid-stride launch over <paramref name="n"/> elements: ceil(n / threads) blocks, capped at 32 per SM, at least 1.</summary>
    public static LaunchConfig Elementwise(long n, int multiprocessors, int threads = ElementwiseThreads)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfLessThan(multiprocessors, 1);
        long blocks = (n + threads - 1) / threads;
        return new LaunchConfig((int)Math.Clamp(blocks, 1, (long)multiprocessors * MaxBlocksPerSm), 1, threads);
    }

    /// <summary>
    /// One block per row of <paramref name="columns"/> elements: threads = the next power of two of ceil(columns / 4),
    /// clamped to [32, 1024], so each thread handles about four elements.
    /// </summary>
    public static LaunchConfig PerRow(int rows, int columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        int threads = (int)Math.Clamp(System.Numerics.BitOperations.RoundUpToPowerOf2((uint)((columns + 3) / 4)), 32u, 1024u);
        return new LaunchConfig(Math.Max(rows, 1), 1, threads);
    }

    /// <summary>One thread per column, 256 per block (column sums, embedding backward, RMSNorm dw partials over <paramref name="chunks"/>).</summary>
    public static LaunchConfig PerColumn(int columns, int chunks = 1) =>
        new(Math.Max(1, (columns + ElementwiseThreads - 1) / ElementwiseThreads), Math.Max(1, chunks), ElementwiseThreads);

    /// <summary>Rows per chunk of RMSNorm's dw partial sums (the CPU kernel's rule: max(32, ceil(n / 256))), and the chunk count.</summary>
    public static (int RowsPerChunk, int Chunks) RmsNormDwChunks(int rows)
    {
        int rowsPerChunk = Math.Max(32, (rows + 255) / 256);
        return (rowsPerChunk, Math.Max(1, (rows + rowsPerChunk - 1) / rowsPerChunk));
    }

    /// <summary>
    /// The cross-entropy backward: grid (column blocks, row blocks), at most 32 column blocks of 256 threads, and at most
    /// <see cref="MaxGridY"/> row blocks: the kernel strides over rows by gridDim.y, so any number of tokens per batch
    /// works (a grid y of one block per row failed above 65,535 tokens).
    /// </summary>
    public static LaunchConfig CrossEntropyBackward(int rows, int vocab) =>
        new(Math.Clamp((vocab + ElementwiseThreads - 1) / ElementwiseThreads, 1, 32), Math.Clamp(rows, 1, MaxGridY), ElementwiseThreads);

    /// <summary>Checks the head size the attention kernels support.</summary>
    /// <exception cref="NotSupportedException">The head size is above 128.</exception>
    public static void CheckAttentionHeadSize(int d)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(d, 1);
        if (d > AttentionMaxHeadSize)
            throw new NotSupportedException($"The CUDA attention kernels support head sizes up to {AttentionMaxHeadSize}; this model has {d}.");
    }

    /// <summary>Attention forward: grid (ceil(tq / 8), b · hq); shared (32·(d+1) + 32·d + 8·d) floats.</summary>
    public static LaunchConfig AttentionForward(int b, int tq, int hq, int d)
    {
        CheckAttentionHeadSize(d);
        return new LaunchConfig(Blocks(tq, AttentionRows), b * hq, AttentionThreads,
            sizeof(float) * (AttentionTile * (d + 1) + AttentionTile * d + AttentionRows * d));
    }

    /// <summary>The delta (dout · out) kernel: grid (ceil(tq / 8), b · hq), no shared memory.</summary>
    public static LaunchConfig AttentionDelta(int b, int tq, int hq) => new(Blocks(tq, AttentionRows), b * hq, AttentionThreads);

    /// <summary>Attention dq: grid (ceil(tq / 8), b · hq); shared (2·32·(d+1) + 2·8·d) floats.</summary>
    public static LaunchConfig AttentionBackwardDq(int b, int tq, int hq, int d)
    {
        CheckAttentionHeadSize(d);
        return new LaunchConfig(Blocks(tq, AttentionRows), b * hq, AttentionThreads,
            sizeof(float) * (2 * AttentionTile * (d + 1) + 2 * AttentionRows * d));
    }

    /// <summary>Attention dk/dv: grid (ceil(tk / 8), b · hkv); shared (2·32·(d+1) + 2·32 + 2·8·d) floats.</summary>
    public static LaunchConfig AttentionBackwardDkDv(int b, int tk, int hkv, int d)
    {
        CheckAttentionHeadSize(d);
        return new LaunchConfig(Blocks(tk, AttentionRows), b * hkv, AttentionThreads,
            sizeof(float) * (2 * AttentionTile * (d + 1) + 2 * AttentionTile + 2 * AttentionRows * d));
    }

    /// <summary>The fused 4-bit GEMV: one warp per output feature, 8 warps per block.</summary>
    public static LaunchConfig Dequant4BitGemv(int outFeatures) => new(Blocks(outFeatures, 8), 1, 256);

    /// <summary>8-bit AdamW: one block of 256 threads per 256 elements.</summary>
    public static LaunchConfig AdamW8bit(long n) => new(checked((int)((n + AdamW8bitBlock - 1) / AdamW8bitBlock)), 1, AdamW8bitBlock);

    /// <summary>
    /// The chunk plan of a multi-tensor AdamW: the first chunk of each tensor (a running sum of ceil(n / chunk)) and the
    /// total, which is the launch's grid.
    /// </summary>
    public static (long[] FirstChunk, long TotalChunks) MultiTensorChunks(IReadOnlyList<long> counts, int chunkSize = AdamWChunk)
    {
        var first = new long[counts.Count];
        long total = 0;
        for (int i = 0; i < counts.Count; i++)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(counts[i], 1, $"counts[{i}]");
            first[i] = total;
            total += (counts[i] + chunkSize - 1) / chunkSize;
        }
        return (first, total);
    }

    private static int Blocks(long n, int per) => (int)Math.Max(1, (n + per - 1) / per);
}
