namespace PeftGen.Methods.LayerDrop;

/// <summary>How the skip probability of a decoder layer depends on its depth.</summary>
public enum LayerDropSchedule
{
    /// <summary>Every layer is skipped with probability p (LayerDrop, Fan et al. 2019).</summary>
    Uniform,
    /// <summary>Layer l of L (0-based) is skipped with probability p·(l + 1)/L, so the last layer gets p (stochastic depth, Huang et al. 2016).</summary>
    Linear,
}

/// <summary>
/// Settings of layer drop: while training, each decoder layer is skipped at random (its input passes through
/// unchanged and its parameters get no gradient); evaluation and generation always run every layer.
/// </summary>
public sealed record LayerDropConfig
{
    /// <summary>The skip probability p in [0, 1) (the deepest layer's, under <see cref="LayerDropSchedule.Linear"/>).</summary>
    public float Probability { get; init; } = 0.1f;

    /// <summary>How the probability grows with depth.</summary>
    public LayerDropSchedule Schedule { get; init; } = LayerDropSchedule.Uniform;

    /// <summary>Only these decoder layers may be skipped; null lets every layer be skipped.</summary>
    public IReadOnlyList<int>? Layers { get; init; }

    /// <summary>Seed of the skip decisions (when no generator is passed in).</summary>
    public int Seed { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (!(Probability >= 0f && Probability < 1f))
            throw new ArgumentException($"Layer drop probability must be in [0, 1) (got {Probability}); 1 would skip every layer.", nameof(Probability));
        if (!Enum.IsDefined(Schedule))
            throw new ArgumentException($"Unknown layer drop schedule {(int)Schedule}: use Uniform or Linear.", nameof(Schedule));
        foreach (int layer in Layers ?? [])
            if (layer < 0) throw new ArgumentException($"Layer drop layer index {layer} is negative.", nameof(Layers));
    }

    /// <summary>The skip probability of each of <paramref name="layerCount"/> layers.</summary>
    /// <exception cref="ArgumentException">A setting is invalid or <see cref="Layers"/> names a layer the model lacks.</exception>
    public float[] ProbabilitiesFor(int layerCount)
    {
        Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(layerCount, 1);
        foreach (int layer in Layers ?? [])
            if (layer >= layerCount)
                throw new ArgumentException($"Layer drop names layer {layer}; the model has {layerCount} decoder layers (0..{layerCount - 1}).", nameof(Layers));
        var p = new float[layerCount];
        for (int l = 0; l < layerCount; l++)
        {
            if (Layers != null && !Layers.Contains(l)) continue;
            p[l] = Schedule == LayerDropSchedule.Uniform ? Probability : Probability * (l + 1) / layerCount;
        }
        return p;
    }
}
