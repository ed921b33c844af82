using System.Diagnostics;

namespace PeftGen.Backends;

/// <summary>The kinds of work a training step's time is broken down into (<see cref="WorkProfiler"/>).</summary>
internal enum WorkKind
{
    /// <summary>GEMMs of the model's own linear layers (float, 16-bit or 4-bit: dequantization is fused into them).</summary>
    ProjectionGemm,
    /// <summary>The output head's GEMMs (hidden → vocabulary, and its input gradient).</summary>
    HeadGemm,
    /// <summary>GEMMs of adapter weights (LoRA's A and B and the like).</summary>
    AdapterGemm,
    /// <summary>Causal attention kernels (scores, softmax and the weighted sum, fused).</summary>
    Attention,
    /// <summary>RMSNorm, RoPE, SwiGLU, residual adds, copies and the other passes over activations.</summary>
    NormsAndElementwise,
    /// <summary>Cross-entropy over the logits (and the fused head + cross-entropy's own passes).</summary>
    CrossEntropy,
    /// <summary>Optimizer updates.</summary>
    Optimizer,
    /// <summary>Renting, zeroing and returning tensor buffers.</summary>
    Allocation,
}

/// <summary>
/// Wall time of a step's host kernels by <see cref="WorkKind"/> and by pass (forward or backward), for the training
/// benchmark's breakdown. Off by default: then each instrumented call costs one static read. Kernels on a GPU run
/// asynchronously and are not timed. Timers do not nest: a kernel called from another one counts toward the outer.
/// </summary>
internal static class WorkProfiler
{
    private static readonly int s_kinds = Enum.GetValues<WorkKind>().Length;
    private static long[] s_ticks = new long[2 * s_kinds];
    private static long[] s_calls = new long[2 * s_kinds];

    [ThreadStatic] private static WorkKind t_gemmKind;
    [ThreadStatic] private static bool t_backward;
    [ThreadStatic] private static int t_depth;

    /// <summary>Whether calls are being timed.</summary>
    public static bool IsEnabled { get; private set; }

    /// <summary>Clears the totals and starts timing.</summary>
    public static void Start()
    {
        s_ticks = new long[2 * s_kinds];
        s_calls = new long[2 * s_kinds];
        IsEnabled = true;
    }

    /// <summary>Stops timing and returns the totals since <see cref="Start"/>.</summary>
    public static WorkProfile Stop()
    {
        IsEnabled = false;
        var entries = new List<WorkProfile.Entry>();
        for (int pass = 0; pass < 2; pass++)
            for (int kind = 0; kind < s_kinds; kind++)
            {
                int i = pass * s_kinds + kind;
                if (s_calls[i] > 0)
                    entries.Add(new((WorkKind)kind, Backward: pass == 1, s_ticks[i] / (double)Stopwatch.Frequency, s_calls[i]));
            }
        return new WorkProfile(entries);
    }

    /// <summary>What the GEMMs issued on this thread now are for (the model's projections unless a scope says otherwise).</summary>
    public static WorkKind GemmKind => t_gemmKind;

    /// <summary>Attributes this thread's GEMMs to <paramref name="kind"/> until the returned scope is disposed.</summary>
    public static GemmScope Gemms(WorkKind kind)
    {
        var previous = t_gemmKind;
        t_gemmKind = kind;
        return new GemmScope(previous);
    }

    /// <summary>
    /// Runs a recorded backward closure under the GEMM kind of the op that recorded it (<see cref="Autograd.Tape"/> keeps
    /// it), counting its time as backward.
    /// </summary>
    public static void RunBackward(WorkKind gemmKind, Action backward)
    {
        var (kind, wasBackward) = (t_gemmKind, t_backward);
        (t_gemmKind, t_backward) = (gemmKind, true);
        try
        {
            backward();
        }
        finally
        {
            (t_gemmKind, t_backward) = (kind, wasBackward);
        }
    }

    /// <summary>Times the call until the returned timer is disposed (nothing when profiling is off or a timer is open).</summary>
    public static Timer Time(WorkKind kind)
    {
        if (!IsEnabled) return new Timer(NotCounted, 0);
        if (t_depth++ > 0) return new Timer(Nested, 0);
        return new Timer((t_backward ? s_kinds : 0) + (int)kind, Stopwatch.GetTimestamp());
    }

    private const int NotCounted = -2, Nested = -1;

    /// <summary>An open timing; disposing it adds the elapsed time to its kind.</summary>
    public readonly struct Timer(int slot, long start) : IDisposable
    {
        public void Dispose()
        {
            if (slot == NotCounted) return;
            t_depth--;
            if (slot == Nested) return;
            long elapsed = Stopwatch.GetTimestamp() - start;
            Interlocked.Add(ref s_ticks[slot], elapsed);
            Interlocked.Increment(ref s_calls[slot]);
        }
    }

    /// <summary>Restores the previous GEMM kind on dispose.</summary>
    public readonly struct GemmScope(WorkKind previous) : IDisposable
    {
        public void Dispose() => t_gemmKind = previous;
    }
}

/// <summary>Seconds and calls by kind of work and pass, as <see cref="WorkProfiler.Stop"/> returns them.</summary>
internal sealed record WorkProfile(IReadOnlyList<WorkProfile.Entry> Entries)
{
    /// <summary>The time spent in one kind of work during one pass.</summary>
    public readonly record struct Entry(WorkKind Kind, bool Backward, double Seconds, long Calls);

    /// <summary>Seconds spent in <paramref name="kind"/> during the forward or the backward pass.</summary>
    public double Seconds(WorkKind kind, bool backward) => Entries.Where(e => e.Kind == kind && e.Backward == backward).Sum(e => e.Seconds);

    /// <summary>Timed calls of <paramref name="kind"/>, both passes.</summary>
    public long Calls(WorkKind kind) => Entries.Where(e => e.Kind == kind).Sum(e => e.Calls);

    /// <summary>Seconds spent in all timed kinds.</summary>
    public double TotalSeconds => Entries.Sum(e => e.Seconds);
}
