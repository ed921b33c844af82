namespace PeftGen.Methods.VeRA;

/// <summary>
/// A VeRA adapter's settings, mirroring PEFT's <c>VeraConfig</c>: y = x·W0ᵀ + Λ_b·B·Λ_d·A·x with A [r, in_max] and
/// B [out_max, r] frozen, random and shared by every adapted layer (each layer uses the top-left slice it needs),
/// and per layer only b [out] (init 0) and d [r] (init <see cref="DInitial"/>) trainable.
/// </summary>
public sealed record VeraConfig
{
    /// <summary>Rank r of the shared projections (PEFT's <c>r</c>; VeRA's typical value is 256).</summary>
    public int Rank { get; init; } = 256;

    /// <summary>The layers to adapt (PEFT's <c>target_modules</c>).</summary>
    public TargetModules Targets { get; init; } = TargetModules.List("q_proj", "v_proj");

    /// <summary>Paths (exact or suffix) to leave alone even if targeted.</summary>
    public IReadOnlyList<string> Exclude { get; init; } = [];

    /// <summary>Only adapt decoder layers with these indices (PEFT's <c>layers_to_transform</c>); null adapts all.</summary>
    public IReadOnlyList<int>? Layers { get; init; }

    /// <summary>
    /// Seed of the shared projections (PEFT's <c>projection_prng_key</c>). PeftGen's generator is not PyTorch's, so the
    /// same key gives different matrices than PEFT: keep <see cref="SaveProjection"/> on for files other tools read.
    /// </summary>
    public int ProjectionSeed { get; init; }

    /// <summary>Store A and B in the adapter file (PEFT's <c>save_projection</c>, default true).</summary>
    public bool SaveProjection { get; init; } = true;

    /// <summary>Dropout on the adapter's input, in [0, 1) (PEFT's <c>vera_dropout</c>).</summary>
    public float Dropout { get; init; }

    /// <summary>Initial value of every entry of d (PEFT's <c>d_initial</c>, default 0.1).</summary>
    public float DInitial { get; init; } = 0.1f;

    /// <summary>Seed for dropout masks.</summary>
    public int Seed { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (Rank < 1) throw new ArgumentException($"VeRA rank must be ≥ 1 (got {Rank}).", nameof(Rank));
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentException($"VeRA dropout must be in [0, 1) (got {Dropout}).", nameof(Dropout));
        if (!float.IsFinite(DInitial) || DInitial == 0)
            throw new ArgumentException($"VeRA d_initial must be finite and non-zero (got {DInitial}): with b = 0 and d = 0 both gradients vanish and the adapter never trains.", nameof(DInitial));
    }
}
