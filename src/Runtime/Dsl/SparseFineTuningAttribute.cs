using PeftGen.Methods.Sparse;

namespace PeftGen;

/// <summary>
/// Declares sparse fine-tuning on a <c>partial</c> model class instead of <see cref="LoRAAttribute"/>: the top
/// <see cref="Fraction"/> of the targeted parameters' entries train (ranked by <see cref="Score"/> over calibration
/// batches), every other entry stays as it was. The generator turns it into a static
/// <see cref="Methods.Sparse.SparseFineTuningConfig"/>, an <c>ApplyAdapters(loss, calibration)</c> that returns the
/// <see cref="Methods.Sparse.SparseFineTuning"/>, and a <c>CreateTrainer</c> that attaches its gradient masks.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class SparseFineTuningAttribute : Attribute
{
    /// <summary>Sparse fine-tuning of the top <paramref name="fraction"/> of the entries of every linear layer but the head.</summary>
    /// <param name="fraction">Share of the candidates' entries that train, in (0, 1].</param>
    public SparseFineTuningAttribute(double fraction)
        : this(fraction, "all-linear")
    {
    }

    /// <summary>Sparse fine-tuning of the top <paramref name="fraction"/> of the entries of <paramref name="targets"/>.</summary>
    /// <param name="fraction">Share of the candidates' entries that train, in (0, 1].</param>
    /// <param name="targets">
    /// The candidate parameters: names matching a parameter or module path or its last segments ("q_proj", "bias"), a
    /// regex over the whole path, or "all-linear".
    /// </param>
    public SparseFineTuningAttribute(double fraction, string targets)
    {
        Fraction = fraction;
        Targets = targets;
    }

    /// <summary>Share of the candidates' entries that train.</summary>
    public double Fraction { get; }

    /// <summary>The candidate parameters as written.</summary>
    public string Targets { get; }

    /// <summary>How entries are ranked; gradient magnitude by default. <see cref="SparseScore.None"/> needs a fraction of 1.</summary>
    public SparseScore Score { get; set; } = SparseScore.GradientMagnitude;

    /// <summary>Batches whose gradients score the entries; 4 by default.</summary>
    public int CalibrationBatches { get; set; } = 4;
}
