namespace PeftGen.Optim;

/// <summary>Learning rate as a function of the step: linear warmup, then constant, linear or cosine decay.</summary>
public sealed class LearningRateSchedule
{
    private readonly Func<int, float> _decay;

    private LearningRateSchedule(string kind, float peak, int warmupSteps, int totalSteps, Func<int, float> decay)
    {
        if (!(peak >= 0)) throw new ArgumentOutOfRangeException(nameof(peak), peak, "must be ≥ 0");
        ArgumentOutOfRangeException.ThrowIfNegative(warmupSteps);
        Kind = kind;
        PeakLearningRate = peak;
        WarmupSteps = warmupSteps;
        TotalSteps = totalSteps;
        _decay = decay;
    }

    /// <summary>"constant", "linear" or "cosine".</summary>
    public string Kind { get; }

    /// <summary>Learning rate reached at the end of warmup.</summary>
    public float PeakLearningRate { get; }

    /// <summary>Steps of linear warmup from 0.</summary>
    public int WarmupSteps { get; }

    /// <summary>Steps over which the decay runs.</summary>
    public int TotalSteps { get; }

    /// <summary>The learning rate for 0-based <paramref name="step"/>.</summary>
    public float At(int step)
    {
        if (step < WarmupSteps) return PeakLearningRate * (step + 1) / WarmupSteps;
        return PeakLearningRate * _decay(step);
    }

    /// <summary>Warmup, then constant (the QLoRA recipe).</summary>
    public static LearningRateSchedule Constant(float peak, int warmupSteps = 0) =>
        new("constant", peak, warmupSteps, int.MaxValue, _ => 1f);

    /// <summary>Warmup, then linear decay to <paramref name="minRatio"/>·peak at <paramref name="totalSteps"/>.</summary>
    public static LearningRateSchedule Linear(float peak, int warmupSteps, int totalSteps, float minRatio = 0f)
    {
        Check(warmupSteps, totalSteps);
        return new("linear", peak, warmupSteps, totalSteps, step =>
            minRatio + (1f - minRatio) * Math.Max(0f, 1f - Progress(step, warmupSteps, totalSteps)));
    }

    /// <summary>Warmup, then half-cosine decay to <paramref name="minRatio"/>·peak at <paramref name="totalSteps"/>.</summary>
    public static LearningRateSchedule Cosine(float peak, int warmupSteps, int totalSteps, float minRatio = 0f)
    {
        Check(warmupSteps, totalSteps);
        return new("cosine", peak, warmupSteps, totalSteps, step =>
            minRatio + (1f - minRatio) * 0.5f * (1f + MathF.Cos(MathF.PI * Math.Min(1f, Progress(step, warmupSteps, totalSteps)))));
    }

    /// <summary>
    /// The schedule named <paramref name="kind"/> ("constant", "linear" or "cosine"; cosine decays to 10% of the
    /// peak) over <paramref name="totalSteps"/> steps.
    /// </summary>
    public static LearningRateSchedule FromName(string kind, float peak, int warmupSteps, int totalSteps) => kind switch
    {
        "constant" => Constant(peak, warmupSteps),
        "linear" => Linear(peak, warmupSteps, totalSteps),
        "cosine" => Cosine(peak, warmupSteps, totalSteps, minRatio: 0.1f),
        _ => throw new ArgumentException($"Unknown learning-rate schedule '{kind}': use constant, linear or cosine.", nameof(kind)),
    };

    private static float Progress(int step, int warmup, int total) => (float)(step - warmup) / Math.Max(1, total - warmup);

    private static void Check(int warmupSteps, int totalSteps)
    {
        if (totalSteps < 1 || warmupSteps > totalSteps)
            throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, $"total steps must be ≥ 1 and ≥ warmup steps ({warmupSteps})");
    }
}
