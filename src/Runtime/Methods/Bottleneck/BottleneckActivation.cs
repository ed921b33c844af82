using PeftGen.Autograd;
using PeftGen.Tensors;

namespace PeftGen.Methods.Bottleneck;

/// <summary>The non-linearity σ between a bottleneck adapter's down and up projections.</summary>
public enum BottleneckActivation
{
    /// <summary>max(0, x) ("relu").</summary>
    Relu,
    /// <summary>x·Φ(x), the exact (erf) GELU of PyTorch's <c>nn.GELU()</c> ("gelu").</summary>
    Gelu,
    /// <summary>x·sigmoid(x) ("silu", also called swish).</summary>
    Silu,
}

/// <summary>
/// The activations a bottleneck adapter applies, as differentiable ops: SiLU is the backend's kernel, ReLU is
/// <see cref="Ops.Relu"/>, GELU an elementwise loop over host memory (an adapter's [b, t, m] activations are small).
/// </summary>
internal static class BottleneckActivations
{
    private const float InvSqrt2 = 0.70710678118654752f;
    private const float InvSqrt2Pi = 0.39894228040143268f;

    /// <summary>σ(x) for x of any shape.</summary>
    public static Tensor Apply(Tensor x, BottleneckActivation activation)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (activation == BottleneckActivation.Silu) return Ops.Silu(x);
        if (activation == BottleneckActivation.Relu) return Ops.Relu(x);
        if (x.Device.Type != DeviceType.Cpu)
            throw new NotSupportedException($"The bottleneck activation {activation} runs on the CPU; {x.DescribeForError()} is on {x.Device}. Use Silu, which every backend implements.");
        x = x.Contiguous();
        var y = Tensor.Empty(x.ShapeArray);                                                // same shape as x
        var xs = x.AsSpan();
        var ys = y.AsSpan();
        for (int i = 0; i < xs.Length; i++) ys[i] = xs[i] * NormalCdf(xs[i]);             // GELU: x·Φ(x)
        if (Tape.ShouldRecord(x))
            Tape.Record(y, () =>
            {
                var g = y.Grad!.AsSpan();
                var input = x.AsSpan();
                var dx = Grads.Buffer(x, out bool acc).AsSpan();
                for (int i = 0; i < input.Length; i++)
                {
                    float v = input[i];
                    float slope = NormalCdf(v) + v * InvSqrt2Pi * MathF.Exp(-0.5f * v * v);  // Φ(x) + x·φ(x)
                    dx[i] = acc ? dx[i] + g[i] * slope : g[i] * slope;
                }
            });
        return y;
    }

    /// <summary>Φ(x) = (1 + erf(x/√2)) / 2.</summary>
    internal static float NormalCdf(float x) => 0.5f * (1f + Erf(x * InvSqrt2));

    /// <summary>erf with Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7, under float32's resolution near 1).</summary>
    internal static float Erf(float x)
    {
        float sign = x < 0f ? -1f : 1f;
        float a = MathF.Abs(x);
        float t = 1f / (1f + 0.3275911f * a);
        float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
        return sign * (1f - poly * MathF.Exp(-a * a));
    }
}
