using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary><c>[SparseFineTuning]</c>; its targets select parameters, not layers.</summary>
internal sealed record SparseFineTuningSpec(double Fraction, TargetSpec Targets, EnumValueSpec Score, int CalibrationBatches) : MethodSpec
{
    /// <summary>The attribute's <c>Score</c> when it is not written: <c>SparseScore.GradientMagnitude</c> (None = 0).</summary>
    public const long DefaultScore = 1;

    /// <summary>The attribute's <c>CalibrationBatches</c> when it is not written.</summary>
    public const int DefaultCalibrationBatches = 4;

    public override MethodDefinition Definition => SparseFineTuningMethod.Instance;
}

/// <summary>Sparse fine-tuning: a chosen fraction of the model's entries trains; which ones depends on calibration, so nothing is planned.</summary>
internal sealed partial class SparseFineTuningMethod() : MethodDefinition<SparseFineTuningSpec, MethodPlan>("SparseFineTuning", Companion.LayerwiseLearningRate)
{
    public static readonly SparseFineTuningMethod Instance = new();

    protected override SparseFineTuningSpec Read(AttributeValues v) => new(
        v.Double("Fraction", 0), TargetMatcher.Parse(v.String("Targets") ?? "all-linear"),
        v.Enum("Score", "PeftGen.Methods.Sparse.SparseScore", SparseFineTuningSpec.DefaultScore),
        v.Int("CalibrationBatches", SparseFineTuningSpec.DefaultCalibrationBatches));

    protected override MethodPlan Plan(SparseFineTuningSpec method, PlanContext context) => MethodPlan.None;
}
