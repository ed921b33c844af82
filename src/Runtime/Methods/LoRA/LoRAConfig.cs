using PeftGen.Methods.DeltaLoRA;

namespace PeftGen.Methods.LoRA;

/// <summary>How LoRA's A matrix starts (B always starts at zero, so the adapter starts as a no-op).</summary>
public enum LoRAInit
{
    /// <summary>Kaiming-uniform with a = √5 (PEFT's default): A ~ U(−1/√in, 1/√in).</summary>
    KaimingUniform,
    /// <summary>A ~ N(0, (1/r)²) (PEFT's "gaussian").</summary>
    Gaussian,
}

/// <summary>Which biases train alongside LoRA (PEFT's bias setting).</summary>
public enum LoRABias
{
    /// <summary>No bias trains ("none").</summary>
    None,
    /// <summary>Every bias in the model trains ("all").</summary>
    All,
    /// <summary>Only the biases of adapted layers train ("lora_only").</summary>
    LoraOnly,
}

/// <summary>
/// A LoRA adapter's settings, mirroring PEFT's <c>LoraConfig</c>: rank r, alpha (scaling alpha/r, or alpha/√r with
/// rsLoRA), dropout on the adapter input, DoRA, init, bias, targets and the layers to transform.
/// </summary>
public sealed record LoRAConfig
{
    /// <summary>Rank r of the update B·A.</summary>
    public int Rank { get; init; } = 8;

    /// <summary>Numerator of the scaling.</summary>
    public float Alpha { get; init; } = 8f;

    /// <summary>Dropout probability on the adapter's input, in [0, 1).</summary>
    public float Dropout { get; init; }

    /// <summary>rsLoRA: scale by alpha/√r instead of alpha/r.</summary>
    public bool UseRsLoRA { get; init; }

    /// <summary>DoRA: a trainable per-row magnitude over the normalised adapted weight.</summary>
    public bool UseDoRA { get; init; }

    /// <summary>Initialisation of A.</summary>
    public LoRAInit Init { get; init; } = LoRAInit.KaimingUniform;

    /// <summary>Which biases train.</summary>
    public LoRABias Bias { get; init; } = LoRABias.None;

    /// <summary>The layers to adapt.</summary>
    public TargetModules Targets { get; init; } = TargetModules.List("q_proj", "v_proj");

    /// <summary>Paths (exact or suffix) to leave alone even if targeted.</summary>
    public IReadOnlyList<string> Exclude { get; init; } = [];

    /// <summary>Only adapt decoder layers with these indices (PEFT's layers_to_transform); null adapts all.</summary>
    public IReadOnlyList<int>? Layers { get; init; }

    /// <summary>Seed for A's initialisation and for dropout masks.</summary>
    public int Seed { get; init; }

    /// <summary>Per-layer rank overrides by path suffix (PEFT's rank_pattern).</summary>
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();

    /// <summary>Per-layer alpha overrides by path suffix (PEFT's alpha_pattern).</summary>
    public IReadOnlyDictionary<string, float> AlphaPattern { get; init; } = new Dictionary<string, float>();

    /// <summary>
    /// LoRA-FA: A stays frozen at its random initialisation and only B trains, so backward keeps x·Aᵀ [..., r]
    /// instead of x [..., in]. Not combinable with DoRA or Delta-LoRA. See docs/methods/lora-fa.md.
    /// </summary>
    public bool UseLoRAFA { get; init; }

    /// <summary>LoRA-FA's optional gradient correction g_B ← (1/s²)·g_B·(A·Aᵀ + 1e-8·I)⁻¹ (needs <see cref="UseLoRAFA"/>).</summary>
    public bool LoRAFAGradientCorrection { get; init; }

    /// <summary>
    /// Delta-LoRA: after each optimizer step past <see cref="DeltaLoRAOptions.StartStep"/> the frozen base also moves by
    /// λ·s·(B⁽ᵗ⁺¹⁾A⁽ᵗ⁺¹⁾ − B⁽ᵗ⁾A⁽ᵗ⁾) (applied by a <see cref="DeltaLoRAUpdater"/>); null for plain LoRA. Needs a float
    /// base (no 4-bit quantization) and no dropout. See docs/methods/delta-lora.md.
    /// </summary>
    public DeltaLoRAOptions? DeltaLoRA { get; init; }

    /// <summary>The scaling s applied to B·A.</summary>
    public float Scaling => ScalingFor(Rank, Alpha);

    internal float ScalingFor(int rank, float alpha) => UseRsLoRA ? alpha / MathF.Sqrt(rank) : alpha / rank;

    /// <summary>The rank of the adapter on module <paramref name="path"/>: its rank_pattern entry, else r.</summary>
    public int RankFor(string path) => Override(RankPattern, path) ?? Rank;

    internal float AlphaFor(string path) => Override(AlphaPattern, path) ?? Alpha;

    private static T? Override<T>(IReadOnlyDictionary<string, T> pattern, string path) where T : struct
    {
        foreach (var (key, value) in pattern)
            if (TargetModules.MatchesName(path, key)) return value;
        return null;
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (Rank < 1) throw new ArgumentException($"LoRA rank must be ≥ 1 (got {Rank}).", nameof(Rank));
        if (!(Alpha > 0)) throw new ArgumentException($"LoRA alpha must be > 0 (got {Alpha}).", nameof(Alpha));
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentException($"LoRA dropout must be in [0, 1) (got {Dropout}).", nameof(Dropout));
        foreach (var (key, r) in RankPattern)
            if (r < 1) throw new ArgumentException($"rank_pattern['{key}'] must be ≥ 1 (got {r}).", nameof(RankPattern));
        foreach (var (key, a) in AlphaPattern)
            if (!(a > 0)) throw new ArgumentException($"alpha_pattern['{key}'] must be > 0 (got {a}).", nameof(AlphaPattern));
        LoRAVariants.Validate(this);
    }
}
