using PeftGen.Methods.LayerDrop;

namespace PeftGen;

/// <summary>
/// Adds layer drop (Fan et al. 2019; stochastic depth with <see cref="LayerDropSchedule.Linear"/>) to the PEFT method a
/// Llama-family model class declares: while training, each decoder layer is skipped with probability p. The generated
/// <c>ApplyAdapters</c> installs it after the method, and the generated <c>CreateTrainer</c> saves its random generator
/// in checkpoints.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class LayerDropAttribute : Attribute
{
    /// <summary>Layer drop with skip probability <paramref name="probability"/>.</summary>
    /// <param name="probability">p in [0, 1) (the deepest layer's under <see cref="LayerDropSchedule.Linear"/>).</param>
    public LayerDropAttribute(double probability) => Probability = probability;

    /// <summary>The skip probability p.</summary>
    public double Probability { get; }

    /// <summary>How p grows with depth; uniform by default.</summary>
    public LayerDropSchedule Schedule { get; set; } = LayerDropSchedule.Uniform;

    /// <summary>Only these decoder layers may be skipped; all when null.</summary>
    public int[]? Layers { get; set; }

    /// <summary>Seed of the skip decisions.</summary>
    public int Seed { get; set; }
}
