using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.Bottleneck;

/// <summary>
/// A bottleneck adapter (Houlsby et al. 2019) on a sublayer output h [..., d]:
/// h + W_up·σ(W_down·h + b_down) + b_up, with its own residual and no layer norm. Children: "adapter_down"
/// (W_down [m, d], b_down [m]) and "adapter_up" (W_up [d, m], b_up [d]). W_up and b_up start at zero, so a new
/// adapter returns h unchanged.
/// </summary>
public sealed class BottleneckAdapter : Module<Tensor, Tensor>
{
    /// <summary>
    /// Creates an adapter of width <paramref name="bottleneckSize"/> on <paramref name="hiddenSize"/> channels; W_down is
    /// drawn Kaiming-uniform, U(−1/√d, 1/√d), from <paramref name="initRng"/>; biases and W_up are zero.
    /// </summary>
    internal BottleneckAdapter(int hiddenSize, int bottleneckSize, BottleneckActivation activation, bool bias, Rng initRng)
    {
        ArgumentNullException.ThrowIfNull(initRng);
        if (bottleneckSize < 1 || bottleneckSize > hiddenSize)
            throw new ArgumentOutOfRangeException(nameof(bottleneckSize), bottleneckSize, $"the bottleneck size must be in [1, hidden size = {hiddenSize}]");
        HiddenSize = hiddenSize;
        BottleneckSize = bottleneckSize;
        Activation = activation;
        Down = RegisterModule("adapter_down", new Linear(hiddenSize, bottleneckSize, bias));      // W_down [m, d]
        Up = RegisterModule("adapter_up", new Linear(bottleneckSize, hiddenSize, bias));          // W_up [d, m] = 0
        var w = Down.Weight.AsSpan();
        float bound = 1f / MathF.Sqrt(hiddenSize);
        for (int i = 0; i < w.Length; i++) w[i] = (2f * initRng.NextSingle() - 1f) * bound;
    }

    /// <summary>The model width d.</summary>
    public int HiddenSize { get; }

    /// <summary>The bottleneck width m.</summary>
    public int BottleneckSize { get; }

    /// <summary>The non-linearity σ.</summary>
    public BottleneckActivation Activation { get; }

    /// <summary>The down projection (W_down [m, d], b_down [m]).</summary>
    public Linear Down { get; }

    /// <summary>The up projection (W_up [d, m], b_up [d]).</summary>
    public Linear Up { get; }

    /// <summary>When true the adapter returns its input unchanged (the base model's behaviour).</summary>
    public bool Disabled { get; set; }

    /// <summary>Parameters of this adapter: 2·d·m, plus d + m with biases.</summary>
    public long ParameterCount => Down.Weight.Count + Up.Weight.Count + (Down.Bias?.Count ?? 0) + (Up.Bias?.Count ?? 0);

    /// <inheritdoc />
    public override Tensor Forward(Tensor input)
    {
        if (Disabled) return input;
        var z = Down.Forward(input);                                                        // [..., m]
        var a = BottleneckActivations.Apply(z, Activation);                                 // [..., m]
        return Ops.Add(input, Up.Forward(a));                                               // [..., d]
    }
}
