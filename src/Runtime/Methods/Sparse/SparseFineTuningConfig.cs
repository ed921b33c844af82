namespace PeftGen.Methods.Sparse;

/// <summary>How sparse fine-tuning chooses the entries that train among the targeted parameters.</summary>
public enum SparseScore
{
    /// <summary>Every entry of every targeted parameter trains (name-based selection, e.g. BitFit-style biases and norms).</summary>
    None,
    /// <summary>The entries with the largest Σ|g| over the calibration batches train.</summary>
    GradientMagnitude,
    /// <summary>The entries with the largest Σ|g·w| (first-order saliency) over the calibration batches train.</summary>
    GradientTimesWeight,
}

/// <summary>
/// Settings of sparse fine-tuning: the parameters named by <see cref="Targets"/> are candidates; with a
/// <see cref="Score"/>, the top <see cref="Fraction"/> of their entries (one global ranking over all candidates) train
/// and every other entry stays exactly as it was. Everything else is frozen.
/// </summary>
public sealed record SparseFineTuningConfig
{
    /// <summary>
    /// Which parameters are candidates. A list entry matches a parameter whose path or whose module's path equals it
    /// or ends with "." + entry ("bias", "q_proj", "input_layernorm"); a regex must match the whole parameter or module
    /// path; "all-linear" takes the parameters of every linear layer except the output head.
    /// </summary>
    public TargetModules Targets { get; init; } = TargetModules.AllLinear;

    /// <summary>How entries are ranked; <see cref="SparseScore.None"/> trains whole tensors.</summary>
    public SparseScore Score { get; init; } = SparseScore.GradientMagnitude;

    /// <summary>Share of the candidates' entries that train, in (0, 1]: k = round(fraction · N), at least 1.</summary>
    public float Fraction { get; init; } = 0.01f;

    /// <summary>Batches whose gradients score the entries (when <see cref="Score"/> is not None).</summary>
    public int CalibrationBatches { get; init; } = 4;

    /// <summary>Biases and norm gains, a BitFit-like selection (Llama has no biases, so only its RMSNorm gains match there).</summary>
    public static SparseFineTuningConfig BiasesAndNorms => new()
    {
        Targets = TargetModules.Regex(@".*\.bias|.*norm\.weight"),
        Score = SparseScore.None,
        Fraction = 1f,
    };

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Targets, nameof(Targets));
        if (!(Fraction > 0f && Fraction <= 1f))
            throw new ArgumentException($"Sparse fine-tuning fraction must be in (0, 1] (got {Fraction}).", nameof(Fraction));
        if (!Enum.IsDefined(Score))
            throw new ArgumentException($"Unknown sparse score {(int)Score}: use None, GradientMagnitude or GradientTimesWeight.", nameof(Score));
        if (Score == SparseScore.None && Fraction < 1f)
            throw new ArgumentException($"Sparse fine-tuning fraction {Fraction} < 1 needs a score to rank entries by: set Score to GradientMagnitude or GradientTimesWeight, or Fraction to 1.", nameof(Fraction));
        if (Score != SparseScore.None && CalibrationBatches < 1)
            throw new ArgumentException($"Sparse fine-tuning needs at least one calibration batch to score entries (got {CalibrationBatches}).", nameof(CalibrationBatches));
    }
}
