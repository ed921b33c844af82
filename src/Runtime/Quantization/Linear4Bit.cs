using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Quantization;

/// <summary>
/// A frozen linear layer y = x·dequant(W)ᵀ + b whose weight W [out, in] is stored in 4 bits (QLoRA's base layer,
/// bitsandbytes' <c>Linear4bit</c>). The 4-bit weight is not a parameter tensor at all, so it never gets a gradient
/// or optimizer state; the float32 bias, if any, is registered as a frozen parameter named "bias". Gradients still
/// flow through the layer to its input, which is what adapters on and below it need.
/// </summary>
public sealed class Linear4Bit : LinearBase
{
    /// <summary>Wraps a quantized weight; the bias [out], if given, is copied (the caller keeps ownership of it) and frozen.</summary>
    /// <exception cref="ArgumentException">The bias is not [out].</exception>
    public Linear4Bit(QuantizedWeight weight, Tensor? bias = null)
    {
        ArgumentNullException.ThrowIfNull(weight);
        Weight = weight;
        if (bias != null)
        {
            if (bias.Rank != 1 || bias.Size(0) != weight.Rows)
                throw new ArgumentException($"Linear4Bit: bias {bias.DescribeForError()} does not fit the 4-bit weight [{weight.Rows}, {weight.Columns}] (expected [{weight.Rows}]).", nameof(bias));
            Bias = RegisterParameter("bias", Tensor.FromArray(bias.ToArray(), weight.Rows), trainable: false);
        }
    }

    /// <summary>Quantizes a float layer's weight to 4 bits (its bias stays float32, frozen). The source layer is left untouched.</summary>
    /// <param name="linear">The layer to quantize.</param>
    /// <param name="type">NF4 (QLoRA's default) or FP4.</param>
    /// <param name="blockSize">Elements per absmax block: a power of two from 32 to 4096.</param>
    /// <param name="doubleQuant">Double-quantize the block scales.</param>
    /// <exception cref="ArgumentException">Bad block size, or a non-finite weight.</exception>
    public static Linear4Bit FromLinear(Linear linear, QuantType type, int blockSize = 64, bool doubleQuant = true)
    {
        ArgumentNullException.ThrowIfNull(linear);
        var weight = QuantizedWeight.Quantize(linear.Weight.ToArray(), linear.OutFeatures, linear.InFeatures, type, blockSize, doubleQuant);
        return new Linear4Bit(weight, linear.Bias);
    }

    /// <summary>The frozen 4-bit weight [out, in].</summary>
    public QuantizedWeight Weight { get; }

    /// <inheritdoc />
    public override int InFeatures => Weight.Columns;

    /// <inheritdoc />
    public override int OutFeatures => Weight.Rows;

    /// <inheritdoc />
    public override Tensor? Bias { get; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => Ops.Linear4Bit(input, Weight, Bias); // [..., in] → [..., out]

    /// <inheritdoc />
    internal override bool KeepsInputForBackward => false; // frozen: backward returns g·dequant(W) only

    /// <summary>The dequantized weight [out, in] as a new float32 tensor.</summary>
    public override Tensor EffectiveWeight()
    {
        var w = Tensor.Empty([OutFeatures, InFeatures]);                                    // [out, in]
        Weight.Dequantize(w.AsSpan());
        return w;
    }
}
