using System.Linq;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary><c>[VeRA]</c>.</summary>
internal sealed record VeRASpec(
    int Rank,
    TargetSpec Targets,
    double DInitial,
    int ProjectionSeed,
    bool SaveProjection,
    double Dropout,
    EquatableArray<string> Exclude,
    EquatableArray<int>? Layers,
    int Seed) : MethodSpec
{
    /// <summary>The attribute's <c>DInitial</c> when it is not written.</summary>
    public const double DefaultDInitial = 0.1;

    public override MethodDefinition Definition => VeRAMethod.Instance;
}

/// <summary>
/// A layer VeRA adapts (the runtime's <c>AdaptedLayer</c> with rank r, alpha and scaling 1): whether its base is stored in
/// 4 bits, and its trainable parameters, the b and d vectors (out + r).
/// </summary>
internal readonly record struct VeRARow(string Path, int InFeatures, int OutFeatures, int Rank, bool Quantized, long TrainableParameters) : IQuantizedRow;

/// <summary>VeRA: frozen random projections shared by every adapted layer, trainable scaling vectors b and d per layer.</summary>
internal sealed partial class VeRAMethod() : MethodDefinition<VeRASpec, RowPlan<VeRARow>>("VeRA", Companion.Quantize | Companion.LayerwiseLearningRate)
{
    public static readonly VeRAMethod Instance = new();

    protected override VeRASpec Read(AttributeValues v) => new(
        v.Int("Rank"), TargetMatcher.Parse(v.String("Targets")), v.Double("DInitial", VeRASpec.DefaultDInitial), v.Int("ProjectionSeed"),
        v.Bool("SaveProjection", true), v.Double("Dropout", 0), TargetMatcher.SplitList(v.String("Exclude")), v.Ints("Layers"), v.Int("Seed"));

    protected override RowPlan<VeRARow> Plan(VeRASpec vera, PlanContext context)
    {
        bool quantize = context.Model.Companions.Quantize != null;
        var layers = vera.Rank >= 1 ? context.Select(vera.Targets, vera.Exclude, vera.Layers) : null;
        return new RowPlan<VeRARow>(layers?.Select(l => new VeRARow(
            l.Path, l.InFeatures!.Value, l.OutFeatures!.Value, vera.Rank, quantize && l.IsFloatLinear, (long)l.OutFeatures!.Value + vera.Rank)).ToEquatableArray());
    }
}
