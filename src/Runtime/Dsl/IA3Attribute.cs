namespace PeftGen;

/// <summary>
/// Declares an (IA)³ adapter (Liu et al. 2022) on a <c>partial</c> model class instead of <see cref="LoRAAttribute"/>:
/// a learned scaling vector per targeted layer, on its output channels (keys, values) or, for the layers in
/// <see cref="FeedForward"/>, on its input channels. The generator turns it into a static
/// <see cref="Methods.IA3.IA3Config"/> and an <c>ApplyAdapters()</c> that returns an <see cref="Methods.IA3.IA3Model{TModel}"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class IA3Attribute : Attribute
{
    /// <summary>(IA)³ on PEFT's Llama defaults: k_proj, v_proj and down_proj, with down_proj feed-forward.</summary>
    public IA3Attribute()
        : this("k_proj,v_proj,down_proj")
    {
    }

    /// <summary>(IA)³ on <paramref name="targets"/>.</summary>
    /// <param name="targets">The layers to adapt, with the rules of <see cref="LoRAAttribute.Targets"/>.</param>
    public IA3Attribute(string targets) => Targets = targets;

    /// <summary>The targeted layers as written (list, regex or "all-linear").</summary>
    public string Targets { get; }

    /// <summary>
    /// Comma-separated targeted layers whose vector scales the input (PEFT's feedforward_modules); each must be one of the
    /// listed targets, and "" treats no layer so. Null (the default) is PEFT's Llama default: down_proj, when the targets
    /// may select it (a list naming it, a regex or "all-linear").
    /// </summary>
    public string? FeedForward { get; set; }

    /// <summary>Comma-separated layer names (exact path or last segments) to leave alone even when targeted.</summary>
    public string? Exclude { get; set; }

    /// <summary>Start the vectors at 1 (a no-op adapter, PEFT's init_ia3_weights); false draws them from N(0, 1).</summary>
    public bool InitWeights { get; set; } = true;

    /// <summary>Seed of the N(0, 1) draw when <see cref="InitWeights"/> is false.</summary>
    public int Seed { get; set; }
}
