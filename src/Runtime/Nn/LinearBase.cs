using PeftGen.Tensors;

namespace PeftGen.Nn;

/// <summary>
/// Anything that maps [..., in] to [..., out] like a linear layer: a float <see cref="Linear"/>, a frozen 4-bit
/// layer, or an adapter-wrapped layer. Models hold their projections as <see cref="LinearBase"/> so adapters
/// and quantization can replace them without the model knowing.
/// </summary>
public abstract class LinearBase : Module<Tensor, Tensor>
{
    /// <summary>Input size.</summary>
    public abstract int InFeatures { get; }

    /// <summary>Output size.</summary>
    public abstract int OutFeatures { get; }

    /// <summary>The bias [out], or null when the layer has none.</summary>
    public virtual Tensor? Bias => null;

    /// <summary>
    /// The layer's effective weight W [out, in] as a new float32 tensor (dequantized, adapters merged where the layer
    /// has them). Used for merging, export and tests; not on the training path.
    /// </summary>
    public abstract Tensor EffectiveWeight();

    /// <summary>
    /// Whether the backward pass of <see cref="Module{TIn, TOut}.Forward"/> reads the input's values (a trainable weight's
    /// gradient does: dW = gᵀ·x). When no consumer of an activation reads it, the model drops its values right after the
    /// forward (<see cref="Tensor.ReleaseValues"/>). Unknown layers say true.
    /// </summary>
    internal virtual bool KeepsInputForBackward => true;
}
