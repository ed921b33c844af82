using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>A set of parameters sharing optimizer settings (PyTorch's param_groups; LoRA+ gives B its own group).</summary>
/// <param name="Parameters">The tensors to update.</param>
/// <param name="LearningRateScale">Multiplier on the optimizer's learning rate for this group.</param>
/// <param name="WeightDecay">Decoupled weight decay of this group; null uses the optimizer's.</param>
public sealed record ParameterGroup(IReadOnlyList<Tensor> Parameters, float LearningRateScale = 1f, float? WeightDecay = null);
