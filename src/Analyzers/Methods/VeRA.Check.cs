using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using PeftGen.Analyzers;
using static PeftGen.Analyzers.CheckContext;

namespace PeftGen.Generator.Methods;

/// <summary>[VeRA] as <c>VeraConfig</c> would check it: rank, DInitial and dropout (PEFT022), and the targets as LoRA's.</summary>
internal sealed partial class VeRAMethod
{
    protected override void Check(CheckContext context, VeRASpec vera, ImmutableArray<AttributeData> attributes)
    {
        var arguments = context.Arguments(attributes[0]);
        if (vera.Rank < 1)
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("rank")), "VeRA rank", Number(vera.Rank), "use a rank of at least 1 (VeRA's typical rank is 256)");
        if (vera.DInitial == 0 || double.IsNaN(vera.DInitial) || double.IsInfinity(vera.DInitial))
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("DInitial")), "VeRA DInitial", Number(vera.DInitial), "it must be finite and non-zero: with b = 0 and d = 0 both gradients vanish and the adapter never trains (0.1 is the default)");
        if (!(vera.Dropout >= 0 && vera.Dropout < 1))
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("Dropout")), "VeRA dropout", Number(vera.Dropout), "use a probability in [0, 1)");
        TargetRules.Check(context, Name, vera.Targets, arguments.Constructor("targets"), arguments, false, context.Model.Tree);
    }
}
