namespace PeftGen.Backends.Cpu;

/// <summary>
/// The one place CPU kernels fan work out to threads, so a single setting controls them all.
/// </summary>
public static class CpuParallel
{
    private static int s_maxThreads = ReadDefaultThreads();

    /// <summary>
    /// Threads CPU kernels may use. Defaults to the <c>PEFTGEN_THREADS</c> environment variable,
    /// else <see cref="Environment.ProcessorCount"/>.
    /// </summary>
    public static int MaxThreads
    {
        get => s_maxThreads;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1, nameof(MaxThreads));
            s_maxThreads = value;
        }
    }

    /// <summary>Runs <paramref name="body"/> for every index in [0, count), on up to <see cref="MaxThreads"/> threads.</summary>
    internal static void For(int count, Action<int> body)
    {
        if (count <= 0) return;
        if (count == 1 || s_maxThreads == 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = s_maxThreads }, body);
    }

    /// <summary>
    /// Splits [0, count) into at most <see cref="MaxThreads"/> contiguous ranges of at least
    /// <paramref name="minChunk"/> items and runs <paramref name="body"/>(start, end) on each.
    /// Use for cheap per-item work where a delegate call per item would dominate.
    /// </summary>
    internal static void ForRange(int count, int minChunk, Action<int, int> body)
    {
        if (count <= 0) return;
        int chunks = Math.Clamp(count / Math.Max(1, minChunk), 1, s_maxThreads);
        if (chunks == 1)
        {
            body(0, count);
            return;
        }
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, c =>
        {
            int start = (int)((long)count * c / chunks);
            int end = (int)((long)count * (c + 1) / chunks);
            body(start, end);
        });
    }

    private static int ReadDefaultThreads()
    {
        var text = Environment.GetEnvironmentVariable("PEFTGEN_THREADS");
        return int.TryParse(text, out int n) && n > 0 ? n : Environment.ProcessorCount;
    }
}
