using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using PeftGen.Analyzers;
using PeftGen.Generator.Spec;
using static PeftGen.Analyzers.CheckContext;

namespace PeftGen.Generator.Methods;

/// <summary>
/// [SparseFineTuning]: the fraction, its score and calibration (PEFT022); its targets select parameters, not layers, so
/// only a regex is checked.
/// </summary>
internal sealed partial class SparseFineTuningMethod
{
    protected override void Check(CheckContext context, SparseFineTuningSpec sparse, ImmutableArray<AttributeData> attributes)
    {
        var arguments = context.Arguments(attributes[0]);
        var fraction = arguments.At(arguments.Constructor("fraction"));
        if (!(sparse.Fraction > 0 && sparse.Fraction <= 1))
            context.Report(DiagnosticCatalog.InvalidMethodSetting, fraction, "Sparse fine-tuning fraction", Number(sparse.Fraction), "use a share of the entries in (0, 1] (0.01 is typical)");
        else if (sparse.Score.Value == 0 && sparse.Fraction < 1)
            context.Report(DiagnosticCatalog.InvalidMethodSetting, fraction, "Sparse fine-tuning fraction", Number(sparse.Fraction), "a fraction below 1 needs a score to rank entries by: set Score to GradientMagnitude or GradientTimesWeight, or the fraction to 1");
        if (sparse.Score.Value != 0 && sparse.CalibrationBatches < 1)
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("CalibrationBatches")), "Sparse fine-tuning calibration batch count", Number(sparse.CalibrationBatches), "a score needs at least one calibration batch");
        if (sparse.Targets.Kind == TargetKind.Regex)
            TargetRules.Check(context, "Sparse fine-tuning", sparse.Targets, arguments.Constructor("targets"), arguments, false, null);
    }
}
