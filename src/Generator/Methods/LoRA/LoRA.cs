using System.Collections.Generic;
using System.Linq;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary><c>[LoRA]</c>: the class's adapters, one per attribute in declaration order (the first one is activated).</summary>
internal sealed record LoRASpec(EquatableArray<AdapterSpec> Adapters) : MethodSpec
{
    public override MethodDefinition Definition => LoRAMethod.Instance;
}

/// <summary>One <c>[LoRA]</c> attribute, its values as written (defaults filled in).</summary>
internal sealed record AdapterSpec(
    string Name,
    int Rank,
    double Alpha,
    TargetSpec Targets,
    double Dropout,
    bool UseRsLoRA,
    bool UseDoRA,
    EnumValueSpec Init,
    EnumValueSpec Bias,
    EquatableArray<string> Exclude,
    EquatableArray<int>? Layers,
    int Seed,
    bool UseLoRAFA,
    bool LoRAFAGradientCorrection);

/// <summary>LoRA's plan: each adapter ready to emit.</summary>
internal sealed record LoRAPlan(EquatableArray<AdapterOutputSpec> Adapters) : MethodPlan
{
    public override IEnumerable<IQuantizedRow> QuantizedLayers =>
        Adapters.SelectMany(a => a.Plan ?? default).Where(r => r.Quantized).Select(r => (IQuantizedRow)r);
}

/// <summary>One adapter ready to emit.</summary>
/// <param name="Adapter">The attribute's values.</param>
/// <param name="MemberPrefix">Prefix of its generated members: "" for "default", else the name in PascalCase.</param>
/// <param name="Exclude">Attribute exclusions followed by <c>[NoLoRA]</c> ones.</param>
/// <param name="RankPattern">Per-layer ranks from <c>[LoRAOverride]</c>, by path or path suffix.</param>
/// <param name="AlphaPattern">Per-layer alphas from <c>[LoRAOverride]</c>, by path or path suffix.</param>
/// <param name="Plan">The adapted layers, or null when a shape or count is only known at run time.</param>
/// <param name="FileKeys">
/// The keys of the adapter's tensors in a PEFT <c>adapter_model.safetensors</c>, in module order: concrete when the
/// plan is known, else with "{i}" for module-list indices (layers the targets may select); null when not knowable.
/// </param>
internal sealed record AdapterOutputSpec(
    AdapterSpec Adapter,
    string MemberPrefix,
    EquatableArray<string> Exclude,
    EquatableArray<PatternEntrySpec> RankPattern,
    EquatableArray<PatternEntrySpec> AlphaPattern,
    EquatableArray<LoRARow>? Plan,
    EquatableArray<string>? FileKeys = null);

/// <summary>A rank_pattern or alpha_pattern entry.</summary>
internal readonly record struct PatternEntrySpec(string Key, double Value);

/// <summary>One row of the compile-time adapter plan (the runtime's <c>AdaptedLayer</c>).</summary>
internal readonly record struct LoRARow(
    string Path, int InFeatures, int OutFeatures, int Rank, float Alpha, float Scaling, bool Quantized, long TrainableParameters) : IQuantizedRow;

/// <summary>
/// LoRA (with rsLoRA, DoRA and LoRA-FA): several <c>[LoRA]</c> attributes are the class's named adapters; member-level
/// <c>[LoRAOverride]</c> and <c>[NoLoRA]</c> become rank/alpha patterns and exclusions.
/// </summary>
internal sealed partial class LoRAMethod()
    : MethodDefinition<LoRASpec, LoRAPlan>("LoRA", Companion.Quantize | Companion.LoRAPlus | Companion.DeltaLoRA | Companion.LayerwiseLearningRate)
{
    public static readonly LoRAMethod Instance = new();

    /// <summary>The name of the adapter a <c>[LoRA]</c> without a Name gets.</summary>
    public const string DefaultAdapterName = "default";

    /// <summary>Every [LoRA] of the class, one adapter each.</summary>
    public override MethodSpec Read(IReadOnlyList<AttributeData> attributes) =>
        new LoRASpec(attributes.Select(a => ReadAdapter(AttributeValues.Of(a))).ToEquatableArray());

    protected override LoRASpec Read(AttributeValues values) => new(new[] { ReadAdapter(values) }.ToEquatableArray());

    private static AdapterSpec ReadAdapter(AttributeValues v) => new(
        v.String("Name") ?? DefaultAdapterName,
        v.Int("rank"),
        v.Double("alpha", 8), // LoRAAttribute.DefaultAlpha
        TargetMatcher.Parse(v.String("targets")),
        v.Double("Dropout", 0),
        v.Bool("UseRsLoRA", false),
        v.Bool("UseDoRA", false),
        v.Enum("Init", "PeftGen.Methods.LoRA.LoRAInit", 0),
        v.Enum("Bias", "PeftGen.Methods.LoRA.LoRABias", 0),
        TargetMatcher.SplitList(v.String("Exclude")),
        v.Ints("Layers"),
        v.Int("Seed"),
        v.Bool("UseLoRAFA", false),
        v.Bool("LoRAFAGradientCorrection", false));
}
