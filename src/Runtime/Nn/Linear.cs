using PeftGen.Tensors;

namespace PeftGen.Nn;

/// <summary>y = x·Wᵀ + b with W [out, in] (PyTorch's <c>nn.Linear</c>; parameters "weight" and "bias").</summary>
public class Linear : LinearBase
{
    /// <summary>Creates a layer. With <paramref name="random"/>, W and b are Kaiming-uniform like PyTorch; otherwise zero (to be loaded).</summary>
    public Linear(int inFeatures, int outFeatures, bool hasBias = false, Random? random = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(inFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        float bound = 1f / MathF.Sqrt(inFeatures);
        Weight = RegisterParameter("weight", random == null
            ? Tensor.Zeros(outFeatures, inFeatures)
            : Tensor.Uniform([outFeatures, inFeatures], random, -bound, bound));
        if (hasBias)
            Bias = RegisterParameter("bias", random == null ? Tensor.Zeros(outFeatures) : Tensor.Uniform([outFeatures], random, -bound, bound));
    }

    /// <inheritdoc />
    public override int InFeatures { get; }

    /// <inheritdoc />
    public override int OutFeatures { get; }

    /// <summary>The weight, [out, in].</summary>
    public Tensor Weight { get; }

    /// <inheritdoc />
    public override Tensor? Bias { get; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => Ops.Linear(input, Weight, Bias); // [..., in] → [..., out]

    /// <inheritdoc />
    internal override bool KeepsInputForBackward => Weight.RequiresGrad; // dx = g·W needs W only; dW = gᵀ·x needs x

    /// <inheritdoc />
    public override Tensor EffectiveWeight() => Weight.Device.Type == DeviceType.Cpu && Weight.DType == DType.Float32
        ? Tensor.Empty([OutFeatures, InFeatures]).CopyFrom(Weight) // no managed copy on the way
        : Tensor.FromArray(Weight.ToArray(), OutFeatures, InFeatures);
}
