using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary><c>[Bottleneck]</c>; <paramref name="Size"/> 0 derives the width from <paramref name="ReductionFactor"/>.</summary>
internal sealed record BottleneckSpec(
    int Size,
    int ReductionFactor,
    EnumValueSpec Placement,
    EnumValueSpec Activation,
    bool Bias,
    EquatableArray<int>? Layers,
    int Seed) : MethodSpec
{
    /// <summary>The attribute's <c>ReductionFactor</c> when it is not written.</summary>
    public const int DefaultReductionFactor = 16;

    /// <summary>The attribute's <c>Placement</c> when it is not written: <c>BottleneckPlacement.Both</c> (Attention = 0, Mlp = 1, Both = 2).</summary>
    public const long DefaultPlacement = 2;

    public override MethodDefinition Definition => BottleneckMethod.Instance;
}

/// <summary>
/// A bottleneck adapter inserted into a decoder layer (the runtime's <c>BottleneckSite</c>): the hidden size d it reads
/// and writes, its width m, and its trainable parameters (2·d·m, plus d + m with biases).
/// </summary>
internal readonly record struct BottleneckSite(string Path, int Hidden, int Width, long TrainableParameters) : IPlanRow;

/// <summary>Bottleneck adapters (Houlsby): <c>h + W_up σ(W_down h)</c> after attention and/or the MLP of each decoder layer.</summary>
internal sealed partial class BottleneckMethod() : MethodDefinition<BottleneckSpec, RowPlan<BottleneckSite>>("Bottleneck", Companion.LayerwiseLearningRate)
{
    public static readonly BottleneckMethod Instance = new();

    protected override BottleneckSpec Read(AttributeValues v) => new(
        v.Int("Size"), v.Int("ReductionFactor", BottleneckSpec.DefaultReductionFactor),
        v.Enum("Placement", "PeftGen.Methods.Bottleneck.BottleneckPlacement", BottleneckSpec.DefaultPlacement),
        v.Enum("Activation", "PeftGen.Methods.Bottleneck.BottleneckActivation", 0),
        v.Bool("Bias", true), v.Ints("Layers"), v.Int("Seed"));

    /// <summary>The sites of a Llama model whose config gives the hidden size and layer count; 2·d·m (+ d + m with biases) each.</summary>
    protected override RowPlan<BottleneckSite> Plan(BottleneckSpec bottleneck, PlanContext context)
    {
        if (!context.Model.IsLlama
            || context.Resolve(ConfigDimension.HiddenSize) is not int d
            || context.Resolve(ConfigDimension.NumHiddenLayers) is not int layers) return new RowPlan<BottleneckSite>(null);
        int m = bottleneck.Size > 0 ? bottleneck.Size : bottleneck.ReductionFactor >= 1 ? d / bottleneck.ReductionFactor : 0;
        if (m < 1 || m > d || bottleneck.Layers is { } only && only.Any(i => i < 0 || i >= layers)) return new RowPlan<BottleneckSite>(null);
        long perSite = 2L * d * m + (bottleneck.Bias ? d + m : 0);
        long placement = bottleneck.Placement.Value;
        var sites = new List<BottleneckSite>();
        for (int i = 0; i < layers; i++)
        {
            if (bottleneck.Layers is { } selected && !selected.Contains(i)) continue;
            string prefix = "model.layers." + i.ToString(CultureInfo.InvariantCulture) + ".";
            if (placement is 0 or 2) sites.Add(new BottleneckSite(prefix + "attn_adapter", d, m, perSite));
            if (placement is 1 or 2) sites.Add(new BottleneckSite(prefix + "mlp_adapter", d, m, perSite));
        }
        return new RowPlan<BottleneckSite>(sites.ToEquatableArray());
    }
}
