namespace PeftGen.Methods.IA3;

/// <summary>
/// An (IA)³ adapter's settings, mirroring PEFT's <c>IA3Config</c>: learned per-channel scaling vectors (init 1) on the
/// targeted linear layers. A layer listed in <see cref="FeedForward"/> scales its input (the FFN's intermediate
/// activation, as in the paper); any other targeted layer scales its output (keys, values).
/// </summary>
public sealed record IA3Config
{
    /// <summary>The layers to adapt; PEFT's Llama default is k_proj, v_proj and down_proj.</summary>
    public TargetModules Targets { get; init; } = TargetModules.List("k_proj", "v_proj", "down_proj");

    /// <summary>
    /// Targeted layers treated as feed-forward (PEFT's feedforward_modules): their vector scales the input instead of
    /// the output. Must be a subset of <see cref="Targets"/>; null treats none so. PEFT's Llama default is down_proj.
    /// </summary>
    public TargetModules? FeedForward { get; init; } = TargetModules.List("down_proj");

    /// <summary>Paths (exact or suffix) to leave alone even if targeted (PEFT's exclude_modules).</summary>
    public IReadOnlyList<string> Exclude { get; init; } = [];

    /// <summary>Start the vectors at 1 so the adapter is a no-op (PEFT's init_ia3_weights); false draws them from N(0, 1).</summary>
    public bool InitWeights { get; init; } = true;

    /// <summary>Seed of the N(0, 1) draw when <see cref="InitWeights"/> is false.</summary>
    public int Seed { get; init; }

    /// <summary>True when the layer at <paramref name="path"/> scales its input.</summary>
    public bool IsFeedForward(string path) => FeedForward?.Matches(path) ?? false;

    /// <summary>
    /// Throws <see cref="ArgumentException"/> naming the first invalid setting: every listed feed-forward name must be
    /// one of the listed targets (PEFT: "feedforward_modules should be a subset of target_modules").
    /// </summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Targets, nameof(Targets));
        ArgumentNullException.ThrowIfNull(Exclude, nameof(Exclude));
        if (FeedForward is not { } ff || Targets.IsAllLinear || Targets.Pattern != null) return;
        if (ff.IsAllLinear || ff.Pattern != null)
            throw new ArgumentException($"IA3 feedforward modules '{ff}' must be listed by name when the targets are a list ({Targets}).", nameof(FeedForward));
        foreach (var name in ff.Names)
            if (!Targets.Names.Contains(name, StringComparer.Ordinal))
                throw new ArgumentException($"IA3 feedforward module '{name}' is not in the target list ({string.Join(", ", Targets.Names)}): feedforward modules must be a subset of the targets. Add '{name}' to the targets or remove it from the feedforward modules.", nameof(FeedForward));
    }
}
