namespace PeftGen;

/// <summary>
/// Declares a VeRA adapter (Kopiczko et al. 2024) on a <c>partial</c> model class instead of <see cref="LoRAAttribute"/>:
/// frozen random projections shared by every targeted layer and, per layer, two trainable vectors b [out] and d [r]
/// (out + r parameters). The generator turns it into a static <see cref="Methods.VeRA.VeraConfig"/> and an
/// <c>ApplyAdapters()</c> that returns a <see cref="Methods.VeRA.VeraModel{TModel}"/>. Combines with <see cref="QuantizeAttribute"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class VeRAAttribute : Attribute
{
    /// <summary>A VeRA adapter of rank <paramref name="rank"/> on <paramref name="targets"/>.</summary>
    /// <param name="rank">Rank r of the shared projections (VeRA's typical value is 256; it may exceed a layer's size).</param>
    /// <param name="targets">The layers to adapt, with the rules of <see cref="LoRAAttribute.Targets"/>.</param>
    public VeRAAttribute(int rank, string targets)
    {
        Rank = rank;
        Targets = targets;
    }

    /// <summary>Rank r of the shared projections.</summary>
    public int Rank { get; }

    /// <summary>The targeted layers as written (list, regex or "all-linear").</summary>
    public string Targets { get; }

    /// <summary>Initial value of every entry of d (PEFT's d_initial); non-zero, 0.1 by default.</summary>
    public double DInitial { get; set; } = 0.1;

    /// <summary>Seed of the shared projections (PEFT's projection_prng_key).</summary>
    public int ProjectionSeed { get; set; }

    /// <summary>Store the projections in the adapter file (PEFT's save_projection); true by default.</summary>
    public bool SaveProjection { get; set; } = true;

    /// <summary>Dropout probability on the adapter's input, in [0, 1); 0 (the default) disables it.</summary>
    public double Dropout { get; set; }

    /// <summary>Comma-separated layer names (exact path or last segments) to leave alone even when targeted.</summary>
    public string? Exclude { get; set; }

    /// <summary>Only adapt the decoder layers with these indices (PEFT's layers_to_transform); all when null.</summary>
    public int[]? Layers { get; set; }

    /// <summary>Seed of the dropout masks.</summary>
    public int Seed { get; set; }
}
