using PeftGen.Quantization;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// y = x·dequant(W)ᵀ (+ bias) with a frozen 4-bit weight: x [..., in], W [out, in], bias [out] → y [..., out].
    /// W is dequantized tile by tile inside the kernel, never as a whole. Backward gives dx = dy·dequant(W) (and
    /// dbias = Σ dy when the bias requires gradients); the 4-bit weight never gets a gradient.
    /// </summary>
    /// <exception cref="ArgumentException">x's last dimension is not W's input size, or the bias is not [out].</exception>
    public static Tensor Linear4Bit(Tensor x, QuantizedWeight weight, Tensor? bias = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(weight);
        int inF = weight.Columns, outF = weight.Rows;
        if (x.Rank < 1 || x.Size(-1) != inF)
            throw new ArgumentException($"Linear4Bit: input {x.DescribeForError()} does not fit the 4-bit weight [{outF}, {inF}] (expected [..., {inF}]).", nameof(x));
        if (bias != null && (bias.Rank != 1 || bias.Size(0) != outF))
            throw new ArgumentException($"Linear4Bit: bias {bias.DescribeForError()} does not fit the 4-bit weight [{outF}, {inF}] (expected [{outF}]).", nameof(bias));
        return FrozenLinear(x, outF, bias,
            (be, input, y) => be.Linear4BitForward(input, weight, y),
            (be, g, gx, accumulate) => be.Linear4BitBackwardInput(g, weight, gx, accumulate));
    }
}
