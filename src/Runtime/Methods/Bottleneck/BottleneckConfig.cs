namespace PeftGen.Methods.Bottleneck;

/// <summary>Where bottleneck adapters sit in each decoder layer.</summary>
public enum BottleneckPlacement
{
    /// <summary>After the attention block only ("attention").</summary>
    Attention,
    /// <summary>After the feed-forward block only ("mlp").</summary>
    Mlp,
    /// <summary>After both, as in Houlsby et al. 2019 ("both").</summary>
    Both,
}

/// <summary>
/// Settings of bottleneck adapters (Houlsby et al. 2019): each adapted sublayer output h becomes
/// h + W_up·σ(W_down·h + b_down) + b_up, with W_down [m, d] and W_up [d, m]. W_up and b_up start at zero, so a new
/// adapter is the identity; W_down starts Kaiming-uniform, U(−1/√d, 1/√d). The base model is frozen. Trainable
/// parameters per adapted sublayer: 2·d·m + d + m with biases, 2·d·m without.
/// </summary>
public sealed record BottleneckConfig
{
    /// <summary>The bottleneck width m (1 ≤ m ≤ hidden size); null derives it from <see cref="ReductionFactor"/>.</summary>
    public int? BottleneckSize { get; init; }

    /// <summary>m = hidden size / factor (integer division) when <see cref="BottleneckSize"/> is null; ≥ 1.</summary>
    public int ReductionFactor { get; init; } = 16;

    /// <summary>The non-linearity σ.</summary>
    public BottleneckActivation Activation { get; init; } = BottleneckActivation.Relu;

    /// <summary>Which sublayer outputs get an adapter.</summary>
    public BottleneckPlacement Placement { get; init; } = BottleneckPlacement.Both;

    /// <summary>Whether the down and up projections have biases (b_down [m], b_up [d]).</summary>
    public bool Bias { get; init; } = true;

    /// <summary>Only adapt decoder layers with these indices; null adapts all.</summary>
    public IReadOnlyList<int>? Layers { get; init; }

    /// <summary>Seed of W_down's initialisation.</summary>
    public int Seed { get; init; }

    /// <summary>Whether the attention output is adapted.</summary>
    public bool AdaptsAttention => Placement is BottleneckPlacement.Attention or BottleneckPlacement.Both;

    /// <summary>Whether the MLP output is adapted.</summary>
    public bool AdaptsMlp => Placement is BottleneckPlacement.Mlp or BottleneckPlacement.Both;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting (checks that need no model).</summary>
    public void Validate()
    {
        if (BottleneckSize is int m && m < 1)
            throw new ArgumentException($"Bottleneck size must be ≥ 1 (got {m}).", nameof(BottleneckSize));
        if (BottleneckSize == null && ReductionFactor < 1)
            throw new ArgumentException($"Bottleneck reduction factor must be ≥ 1 (got {ReductionFactor}).", nameof(ReductionFactor));
        if (!Enum.IsDefined(Activation))
            throw new ArgumentException($"Unknown bottleneck activation {(int)Activation}: use Relu, Gelu or Silu.", nameof(Activation));
        if (!Enum.IsDefined(Placement))
            throw new ArgumentException($"Unknown bottleneck placement {(int)Placement}: use Attention, Mlp or Both.", nameof(Placement));
        foreach (int layer in Layers ?? [])
            if (layer < 0) throw new ArgumentException($"Bottleneck layer index {layer} is negative.", nameof(Layers));
    }

    /// <summary>The bottleneck width m for a model of width <paramref name="hiddenSize"/>.</summary>
    /// <exception cref="ArgumentException">m would be 0 or wider than the model.</exception>
    public int SizeFor(int hiddenSize)
    {
        Validate();
        if (BottleneckSize is int m)
        {
            if (m > hiddenSize)
                throw new ArgumentException($"Bottleneck size {m} exceeds the hidden size {hiddenSize}: a bottleneck must be at most as wide as the model (use 1..{hiddenSize}).", nameof(BottleneckSize));
            return m;
        }
        int derived = hiddenSize / ReductionFactor;
        if (derived < 1)
            throw new ArgumentException($"Reduction factor {ReductionFactor} leaves hidden size {hiddenSize} / {ReductionFactor} = 0 bottleneck channels; use a factor ≤ {hiddenSize} or set BottleneckSize.", nameof(ReductionFactor));
        return derived;
    }

    /// <summary>Trainable parameters of one adapter of width <paramref name="size"/> on a model of width <paramref name="hiddenSize"/>.</summary>
    internal long ParametersPerAdapter(int hiddenSize, int size) => 2L * hiddenSize * size + (Bias ? hiddenSize + size : 0);
}
