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

    private Linear(Tensor weight, Tensor? bias)
    {
        InFeatures = weight.Size(1);
        OutFeatures = weight.Size(0);
        Weight = RegisterParameter("weight", weight, trainable: weight.DType == DType.Float32);
        if (bias != null) Bias = RegisterParameter("bias", bias);
    }

    /// <summary>
    /// A layer that takes ownership of <paramref name="weight"/> [out, in] and <paramref name="bias"/> [out] (it disposes
    /// them with itself). A float32 weight trains like the constructor's (freeze it, or the model, to keep it fixed); a
    /// bf16 or fp16 weight, as stored in a checkpoint, stays 16-bit (half the memory) and is frozen: the forward,
    /// the input gradient, generation and adapter merges all work on it without widening it as a whole. The bias is
    /// converted to float32 in place if it is 16-bit (it is small, and added in float32).
    /// </summary>
    /// <exception cref="ArgumentException">
    /// The weight is not a dense 2-D tensor, is an activation recorded by autograd, or the bias is not a dense [out] tensor on
    /// the weight's device.
    /// </exception>
    public static Linear FromWeight(Tensor weight, Tensor? bias = null)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Rank != 2 || weight.Size(0) < 1 || weight.Size(1) < 1)
            throw new ArgumentException($"Linear.FromWeight: the weight {weight.DescribeForError()} must be [out, in] with both sizes at least 1.", nameof(weight));
        if (!weight.IsLeaf || !weight.IsContiguous || weight.Offset != 0)
            throw new ArgumentException($"Linear.FromWeight: the weight {weight.DescribeForError()} must be a dense leaf tensor (not a view or an activation); pass a copy.", nameof(weight));
        if (bias != null)
        {
            if (bias.Rank != 1 || bias.Size(0) != weight.Size(0))
                throw new ArgumentException($"Linear.FromWeight: the bias {bias.DescribeForError()} does not fit the weight {weight.DescribeForError()} (expected [{weight.Size(0)}]).", nameof(bias));
            if (!bias.IsLeaf || !bias.IsContiguous || bias.Offset != 0 || bias.Device != weight.Device)
                throw new ArgumentException($"Linear.FromWeight: the bias {bias.DescribeForError()} must be a dense leaf tensor on the weight's device ({weight.Device}).", nameof(bias));
            bias.ConvertInPlace(DType.Float32);
        }
        return new Linear(weight, bias);
    }

    /// <inheritdoc />
    public override int InFeatures { get; }

    /// <inheritdoc />
    public override int OutFeatures { get; }

    /// <summary>The weight, [out, in]: float32, or a frozen bf16/fp16 tensor (see <see cref="FromWeight"/>).</summary>
    public Tensor Weight { get; }

    /// <inheritdoc />
    public override Tensor? Bias { get; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => Ops.Linear(input, Weight, Bias); // [..., in] → [..., out]

    /// <inheritdoc />
    internal override bool KeepsInputForBackward => Weight.RequiresGrad; // dx = g·W needs W only; dW = gᵀ·x needs x

    /// <inheritdoc />
    /// <remarks>A 16-bit weight is widened (exactly) into the float32 copy.</remarks>
    public override Tensor EffectiveWeight() => Weight.Device.Type == DeviceType.Cpu && Weight.DType == DType.Float32
        ? Tensor.Empty([OutFeatures, InFeatures]).CopyFrom(Weight) // no managed copy on the way
        : Tensor.FromArray(Weight.ToArray(), OutFeatures, InFeatures);

    /// <summary>
    /// Edits the weight through a float32 view of it: a float32 weight is passed as it is; a 16-bit one is widened into a
    /// float32 copy on its device, edited, and rounded back in place (as PEFT merges into a bf16 base). Adapter merges use
    /// this so that they work on either base.
    /// </summary>
    internal void UpdateWeight(Action<Tensor> edit)
    {
        if (Weight.DType == DType.Float32)
        {
            edit(Weight);
            return;
        }
        using var wide = Weight.To(DType.Float32);                                           // [out, in] float32
        edit(wide);
        Weight.CopyFrom(wide);
    }
}
