using PeftGen.Methods.Bottleneck;

namespace PeftGen;

/// <summary>
/// Declares bottleneck adapters (Houlsby et al. 2019) on a <c>partial</c> Llama-family model class instead of
/// <see cref="LoRAAttribute"/>: h + W_up·σ(W_down·h) after the attention and/or MLP block of each decoder layer. The
/// generator turns it into a static <see cref="Methods.Bottleneck.BottleneckConfig"/> and an <c>ApplyAdapters()</c> that returns a
/// <see cref="Methods.Bottleneck.BottleneckModel{TModel}"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class BottleneckAttribute : Attribute
{
    /// <summary>Adapters of width hidden size / <see cref="ReductionFactor"/> (16 unless set).</summary>
    public BottleneckAttribute()
    {
    }

    /// <summary>Adapters of width <paramref name="size"/>.</summary>
    /// <param name="size">The bottleneck width m, 1 ≤ m ≤ the hidden size.</param>
    public BottleneckAttribute(int size) => Size = size;

    /// <summary>The bottleneck width m; 0 derives it from <see cref="ReductionFactor"/>.</summary>
    public int Size { get; }

    /// <summary>m = hidden size / factor when no size is given; 16 by default.</summary>
    public int ReductionFactor { get; set; } = 16;

    /// <summary>Which sublayer outputs get an adapter; both by default, as in the paper.</summary>
    public BottleneckPlacement Placement { get; set; } = BottleneckPlacement.Both;

    /// <summary>The non-linearity σ; ReLU by default.</summary>
    public BottleneckActivation Activation { get; set; } = BottleneckActivation.Relu;

    /// <summary>Whether the projections have biases; true by default.</summary>
    public bool Bias { get; set; } = true;

    /// <summary>Only adapt the decoder layers with these indices; all when null.</summary>
    public int[]? Layers { get; set; }

    /// <summary>Seed of W_down's initialisation.</summary>
    public int Seed { get; set; }
}
