using System.Collections.Immutable;
using System.Linq;
using Microsoft.CodeAnalysis;
using PeftGen.Analyzers;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary>[IA3]: the feed-forward layers must be targets (PEFT023); written targets are checked as LoRA's.</summary>
internal sealed partial class IA3Method
{
    protected override void Check(CheckContext context, IA3Spec ia3, ImmutableArray<AttributeData> attributes)
    {
        var arguments = context.Arguments(attributes[0]);
        if (arguments.Constructor("targets") is { } targets)
            TargetRules.Check(context, Name, ia3.Targets, targets, arguments, false, context.Model.Tree);
        if (ia3.Targets.Kind != TargetKind.List || ia3.FeedForward is not { Kind: TargetKind.List } feedForward) return;
        var syntax = arguments.Named("FeedForward");
        foreach (var name in feedForward.Names.Where(n => !ia3.Targets.Names.Contains(n)))
        {
            var at = TargetRules.EntryLocation(syntax, name) ?? arguments.At(syntax);
            context.Report(DiagnosticCatalog.FeedForwardNotTargeted, at, name, string.Join(", ", ia3.Targets.Names));
        }
    }
}
