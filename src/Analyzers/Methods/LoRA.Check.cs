using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using Microsoft.CodeAnalysis;
using PeftGen.Analyzers;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;
using static PeftGen.Analyzers.CheckContext;

namespace PeftGen.Generator.Methods;

/// <summary>
/// Each [LoRA] as <c>LoRAConfig.Validate</c> and <c>PeftModel</c> would check it at run time: rank, alpha and dropout
/// (PEFT002, PEFT004, PEFT005), the targets (PEFT006, PEFT007, PEFT014, PEFT017), the rank against each planned layer
/// (PEFT003), the scaling (PEFT013), distinct names (PEFT012), and the variants and [DeltaLoRA] that cannot be combined
/// (PEFT020, PEFT021, PEFT022).
/// </summary>
internal sealed partial class LoRAMethod
{
    // "Far outside 0.5–4": a factor of two beyond either end, so QLoRA's recipe (alpha 16, rank 64: 0.25) passes.
    private const double LowestUsualScaling = 0.25;
    private const double HighestUsualScaling = 8;

    protected override void Check(CheckContext context, LoRASpec lora, ImmutableArray<AttributeData> attributes)
    {
        bool quantized = context.Declaration.Companions.Quantize != null;
        var plan = context.Model.Plan?.Method as LoRAPlan;
        var names = new HashSet<string>();
        for (int i = 0; i < attributes.Length; i++)
        {
            var adapter = lora.Adapters[i];
            var arguments = context.Arguments(attributes[i]);
            CheckValues(context, adapter, arguments);
            TargetRules.Check(context, Name, adapter.Targets, arguments.Constructor("targets"), arguments, quantized, context.Model.Tree);
            if (plan?.Adapters[i].Plan is { } rows) CheckRanks(context, adapter, arguments, rows);
            if (!names.Add(adapter.Name))
                context.Report(DiagnosticCatalog.DuplicateAdapterName, arguments.At(arguments.Named("Name")), adapter.Name, context.Type.Name);
            CheckVariants(context, adapter, arguments);
        }
        if (context.Declaration.Companion(Companion.DeltaLoRA) is { } delta) CheckDeltaLoRA(context, lora, context.Arguments(delta));
    }

    private static void CheckValues(CheckContext context, AdapterSpec spec, AttributeArguments arguments)
    {
        var rank = arguments.Constructor("rank");
        var alpha = arguments.Constructor("alpha");
        if (spec.Rank < 1)
            context.Report(DiagnosticCatalog.InvalidRank, arguments.At(rank), Number(spec.Rank));
        if (!(spec.Alpha > 0))
            context.Report(DiagnosticCatalog.InvalidAlpha, arguments.At(alpha), Number(spec.Alpha));
        if (!(spec.Dropout >= 0 && spec.Dropout < 1))
            context.Report(DiagnosticCatalog.InvalidDropout, arguments.At(arguments.Named("Dropout")), Number(spec.Dropout));
        if (spec.Rank >= 1 && spec.Alpha > 0)
        {
            double scaling = spec.UseRsLoRA ? spec.Alpha / Math.Sqrt(spec.Rank) : spec.Alpha / spec.Rank;
            if (scaling < LowestUsualScaling || scaling > HighestUsualScaling)
            {
                context.Report(DiagnosticCatalog.UnusualScaling, arguments.At(alpha ?? rank), spec.Name, Number(scaling), Number(spec.Alpha), Number(spec.Rank),
                    spec.UseRsLoRA ? ", rsLoRA: alpha / √rank" : "");
            }
        }
    }

    /// <summary>One PEFT003 per rank argument, naming its narrowest offending layer, so a fix below that limit fixes them all.</summary>
    private static void CheckRanks(CheckContext context, AdapterSpec spec, AttributeArguments arguments, EquatableArray<LoRARow> rows)
    {
        var offending = rows.Where(r => r.Rank > Math.Min(r.InFeatures, r.OutFeatures))
            .GroupBy(r => r.Rank == spec.Rank ? null : OverrideRank(context, spec, r))
            .Select(g => (Location: g.Key, Row: g.OrderBy(r => Math.Min(r.InFeatures, r.OutFeatures)).First()));
        foreach (var (location, row) in offending)
        {
            context.Report(DiagnosticCatalog.RankTooLarge, location ?? arguments.At(arguments.Constructor("rank")),
                Number(row.Rank), Number(Math.Min(row.InFeatures, row.OutFeatures)), row.Path, Number(row.OutFeatures), Number(row.InFeatures));
        }
    }

    /// <summary>The Rank argument of the narrowest [LoRAOverride] that gives <paramref name="row"/> its rank.</summary>
    private static Location? OverrideRank(CheckContext context, AdapterSpec spec, LoRARow row)
    {
        foreach (var node in context.Model.Tree!.Nodes.Where(n => TargetMatcher.Covers(n.Path, row.Path)).OrderByDescending(n => n.Path.Length))
        {
            foreach (var attribute in node.Member.GetAttributes())
            {
                if (ModuleWalker.ReadOverride(context.Declaration.Known, attribute, node.Path) is { Exclude: false } o
                    && (o.Adapter == null || o.Adapter == spec.Name) && o.Rank == row.Rank)
                {
                    var arguments = context.Arguments(attribute);
                    return arguments.At(arguments.Named("Rank"));
                }
            }
        }
        return null;
    }

    /// <summary>The combinations <c>LoRAVariants.Validate</c> refuses in one adapter, reported on the setting.</summary>
    private static void CheckVariants(CheckContext context, AdapterSpec spec, AttributeArguments arguments)
    {
        if (spec.UseLoRAFA && spec.UseDoRA)
            context.Report(DiagnosticCatalog.IncompatibleLoRAVariants, arguments.At(arguments.Named("UseLoRAFA")), "UseLoRAFA", "UseDoRA", "DoRA's backward needs the input x that LoRA-FA avoids keeping; set one of them");
        if (spec.LoRAFAGradientCorrection && !spec.UseLoRAFA)
            context.Report(DiagnosticCatalog.IncompatibleLoRAVariants, arguments.At(arguments.Named("LoRAFAGradientCorrection")), "LoRAFAGradientCorrection", "plain LoRA", "it corrects B's gradient when A is frozen; set UseLoRAFA = true too, or remove it");
    }

    /// <summary>[DeltaLoRA]'s values, its 4-bit base (PEFT020), and the adapters' settings it cannot go with, reported on it.</summary>
    private static void CheckDeltaLoRA(CheckContext context, LoRASpec lora, AttributeArguments arguments)
    {
        var delta = context.Declaration.Companions.DeltaLoRA!;
        if (delta.StartStep < 0)
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("startStep")), "Delta-LoRA start step", Number(delta.StartStep), "use 0 or more optimizer steps of warm-up (500 is the paper's)");
        if (!(delta.UpdateRatio > 0) || double.IsInfinity(delta.UpdateRatio))
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("updateRatio")), "Delta-LoRA update ratio", Number(delta.UpdateRatio), "λ must be finite and greater than 0 (2 is the paper's)");
        if (context.Declaration.Companions.Quantize != null)
            context.Report(DiagnosticCatalog.DeltaLoRAOnQuantizedBase, arguments.Location);
        foreach (var spec in lora.Adapters)
        {
            if (spec.UseDoRA)
                context.Report(DiagnosticCatalog.IncompatibleLoRAVariants, arguments.Location, "[DeltaLoRA]", "UseDoRA", "DoRA renormalises W0 + s·B·A per row, so moving W by the change of s·B·A no longer follows the update; use one of them");
            if (spec.UseLoRAFA)
                context.Report(DiagnosticCatalog.IncompatibleLoRAVariants, arguments.Location, "[DeltaLoRA]", "UseLoRAFA", "PeftGen supports each on its own; remove [DeltaLoRA] or UseLoRAFA");
            if (spec.Dropout != 0)
                context.Report(DiagnosticCatalog.IncompatibleLoRAVariants, arguments.Location, "[DeltaLoRA]", "Dropout", "Delta-LoRA trains without dropout on the LoRA path, so that the base moves by the update the loss saw; set Dropout = 0");
        }
    }
}
