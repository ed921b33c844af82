using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>What the trainer needs from an optimizer (AdamW, 8-bit AdamW, their paged variants).</summary>
public interface IOptimizer : IDisposable
{
    /// <summary>Base learning rate; a schedule sets it before every step. Groups scale it.</summary>
    float LearningRate { get; set; }

    /// <summary>Updates taken so far.</summary>
    int StepCount { get; }

    /// <summary>The parameter groups (LoRA+ puts B matrices in a group with a larger learning-rate scale).</summary>
    IReadOnlyList<ParameterGroup> Groups { get; }

    /// <summary>Applies one update from the accumulated gradients; parameters without a gradient are skipped.</summary>
    void Step();

    /// <summary>Drops every parameter's gradient, ready for the next accumulation.</summary>
    void ZeroGrad();

    /// <summary>
    /// Writes the optimizer's state (step count and per-parameter moments, in group order) so a checkpoint can
    /// resume bit-exactly.
    /// </summary>
    void WriteState(BinaryWriter writer);

    /// <summary>Restores state written by <see cref="WriteState"/> for the same parameter layout.</summary>
    /// <exception cref="InvalidDataException">The state does not fit this optimizer's parameters.</exception>
    void ReadState(BinaryReader reader);
}

/// <summary>Helpers shared by optimizers.</summary>
public static class OptimizerExtensions
{
    /// <summary>Every parameter of every group.</summary>
    public static IEnumerable<Tensor> AllParameters(this IOptimizer optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        return optimizer.Groups.SelectMany(g => g.Parameters);
    }
}
