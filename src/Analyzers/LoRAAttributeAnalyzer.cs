using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Globalization;
using System.Linq;
using System.Text.RegularExpressions;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Diagnostics;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>
/// Checks each [LoRA] the way <c>LoRAConfig.Validate</c> and <c>PeftModel</c> would at run time: rank, alpha and
/// dropout (PEFT002, PEFT004, PEFT005), the targets against the model's layers (PEFT006, PEFT007, PEFT017), the rank
/// against each planned layer's shape (PEFT003), and the advice warnings on scaling and QLoRA targets (PEFT013, PEFT014).
/// The targets of [VeRA], [IA3] and [SparseFineTuning] get the same target checks.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class LoRAAttributeAnalyzer : DiagnosticAnalyzer
{
    // "Far outside 0.5–4": a factor of two beyond either end, so QLoRA's recipe (alpha 16, rank 64: 0.25) passes.
    private const double LowestUsualScaling = 0.25;
    private const double HighestUsualScaling = 8;

    private static readonly HashSet<string> AttentionQueryValue = new(StringComparer.Ordinal) { "q_proj", "v_proj" };

    /// <inheritdoc />
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; } = ImmutableArray.Create(
        DiagnosticCatalog.InvalidRank, DiagnosticCatalog.RankTooLarge, DiagnosticCatalog.InvalidAlpha, DiagnosticCatalog.InvalidDropout,
        DiagnosticCatalog.UnknownTarget, DiagnosticCatalog.TargetNotLinear, DiagnosticCatalog.UnusualScaling,
        DiagnosticCatalog.QLoRAOnFewTargets, DiagnosticCatalog.InvalidTargetRegex);

    /// <inheritdoc />
    public override void Initialize(AnalysisContext context)
    {
        context.EnableConcurrentExecution();
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.RegisterCompilationStartAction(start =>
        {
            if (PeftCompilation.From(start.Compilation, start.Options) is not { } peft) return;
            start.RegisterSymbolAction(symbol => Analyze(symbol, peft), SymbolKind.NamedType);
        });
    }

    private static void Analyze(SymbolAnalysisContext context, PeftCompilation peft)
    {
        var type = (INamedTypeSymbol)context.Symbol;
        var adapters = AdapterDeclaration.All(type);
        if (adapters.IsEmpty)
        {
            AnalyzeOtherMethod(context, type, peft);
            return;
        }
        bool quantized = ModelAnalysis.Find(type, peft.Known.Quantize) != null;
        var model = peft.Model(type, context.CancellationToken);
        for (int i = 0; i < adapters.Length; i++)
        {
            var adapter = adapters[i];
            var arguments = AttributeArguments.Of(adapter.Data, context.CancellationToken);
            CheckValues(context, adapter.Spec, arguments);
            CheckTargets(context, "LoRA", adapter.Spec.Targets, arguments.Constructor("targets"), arguments, quantized, model?.Tree);
            if (model?.Plan.Adapters[i].Plan is { } rows) CheckRanks(context, adapter.Spec, arguments, rows, model, peft.Known.LoRAOverride);
        }
    }

    private static void CheckValues(SymbolAnalysisContext context, AdapterSpec spec, AttributeArguments arguments)
    {
        var rank = arguments.Constructor("rank");
        var alpha = arguments.Constructor("alpha");
        if (spec.Rank < 1)
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.InvalidRank, arguments.At(rank), Format(spec.Rank)));
        if (!(spec.Alpha > 0))
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.InvalidAlpha, arguments.At(alpha), Format(spec.Alpha)));
        if (!(spec.Dropout >= 0 && spec.Dropout < 1))
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.InvalidDropout, arguments.At(arguments.Named("Dropout")), Format(spec.Dropout)));
        if (spec.Rank >= 1 && spec.Alpha > 0)
        {
            double scaling = spec.UseRsLoRA ? spec.Alpha / Math.Sqrt(spec.Rank) : spec.Alpha / spec.Rank;
            if (scaling < LowestUsualScaling || scaling > HighestUsualScaling)
            {
                context.ReportDiagnostic(Diagnostic.Create(
                    DiagnosticCatalog.UnusualScaling, arguments.At(alpha ?? rank), spec.Name, Format(scaling), Format(spec.Alpha), Format(spec.Rank),
                    spec.UseRsLoRA ? ", rsLoRA: alpha / √rank" : ""));
            }
        }
    }

    /// <summary>
    /// The targets of [VeRA] and [IA3] (layers, as LoRA's) and of [SparseFineTuning] (parameters, so only a regex is
    /// checked there), with the same diagnostics and code fix as [LoRA]'s; the first method attribute is the class's method.
    /// </summary>
    private static void AnalyzeOtherMethod(SymbolAnalysisContext context, INamedTypeSymbol type, PeftCompilation peft)
    {
        var methods = MethodParser.MethodAttributes(type);
        if (methods.Count == 0 || !KnownSymbols.DerivesFrom(type, peft.Known.Module)) return;
        var arguments = AttributeArguments.Of(methods[0], context.CancellationToken);
        var tree = new System.Lazy<ModuleTree>(() => ModuleTree.Walk(type, peft.Known, context.CancellationToken));
        switch (MethodParser.Read(methods[0]))
        {
            case VeraSpec vera:
                CheckTargets(context, "VeRA", vera.Targets, arguments.Constructor("targets"), arguments, false, tree.Value);
                break;
            case IA3Spec ia3 when arguments.Constructor("targets") is { } syntax:
                CheckTargets(context, "IA3", ia3.Targets, syntax, arguments, false, tree.Value);
                break;
            case SparseSpec { Targets.Kind: TargetKind.Regex } sparse:
                CheckTargets(context, "Sparse fine-tuning", sparse.Targets, arguments.Constructor("targets"), arguments, false, null);
                break;
        }
    }

    // method: the method as the messages name it ("LoRA", "VeRA", "IA3" or "Sparse fine-tuning").
    private static void CheckTargets(SymbolAnalysisContext context, string method, TargetSpec targets, ExpressionSyntax? targetsSyntax, AttributeArguments arguments,
        bool quantized, ModuleTree? tree)
    {
        var at = arguments.At(targetsSyntax);
        string typeName = context.Symbol.Name;
        switch (targets.Kind)
        {
            case TargetKind.Invalid:
                context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.UnknownTarget, at, method, targets.Text, typeName,
                    " Name at least one layer, e.g. \"q_proj,v_proj\", or use \"all-linear\"."));
                return;
            case TargetKind.Regex:
                try
                {
                    _ = new Regex(targets.Text);
                }
                catch (ArgumentException e)
                {
                    context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.InvalidTargetRegex, at, method, targets.Text, e.Message));
                }
                return;
            case TargetKind.List:
                if (quantized && targets.Names.All(n => AttentionQueryValue.Contains(TargetNames.LeafName(n))))
                    context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.QLoRAOnFewTargets, at, string.Join(", ", targets.Names)));
                if (tree is { IsComplete: true }) CheckNames(context, method, targets, targetsSyntax, at, tree);
                return;
        }
    }

    private static void CheckNames(SymbolAnalysisContext context, string method, TargetSpec targets, ExpressionSyntax? syntax, Location at, ModuleTree tree)
    {
        var leafNames = tree.Linears.Select(n => TargetNames.LeafName(n.Path)).Distinct(StringComparer.Ordinal).ToList();
        foreach (var name in targets.Names)
        {
            if (tree.Linears.Any(n => TargetNames.Matches(n.Path, name))) continue;
            var entry = TargetNames.EntryLocation(syntax, name);
            if (tree.Nodes.FirstOrDefault(n => TargetNames.Matches(n.Path, name)) is { } module)
            {
                context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.TargetNotLinear, entry ?? at, method, name, module.Path, module.Type.Name));
                continue;
            }
            var suggestion = TargetNames.Closest(name, leafNames);
            string hint = (suggestion != null ? " Did you mean '" + suggestion + "'?" : "")
                + (leafNames.Count > 0 ? " Linear layers here: " + string.Join(", ", leafNames) + "." : " It has no linear layers.");
            // The code fix finds the entry in the literal's source text by the Target property and puts the suggestion there.
            var properties = ImmutableDictionary<string, string?>.Empty.Add(DiagnosticCatalog.TargetProperty, name);
            if (suggestion != null) properties = properties.Add(DiagnosticCatalog.SuggestionProperty, suggestion);
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.UnknownTarget, entry ?? at, properties, method, name, context.Symbol.Name, hint));
        }
    }

    /// <summary>One PEFT003 per rank argument, naming its narrowest offending layer, so a fix below that limit fixes them all.</summary>
    private static void CheckRanks(SymbolAnalysisContext context, AdapterSpec spec, AttributeArguments arguments, EquatableArray<PlanRowSpec> rows,
        ModelAnalysis model, INamedTypeSymbol? overrideClass)
    {
        var offending = rows.Where(r => r.Rank > Math.Min(r.InFeatures, r.OutFeatures))
            .GroupBy(r => r.Rank == spec.Rank ? null : OverrideRank(model, spec, r, overrideClass, context.CancellationToken))
            .Select(g => (Location: g.Key, Row: g.OrderBy(r => Math.Min(r.InFeatures, r.OutFeatures)).First()));
        foreach (var (location, row) in offending)
        {
            context.ReportDiagnostic(Diagnostic.Create(
                DiagnosticCatalog.RankTooLarge, location ?? arguments.At(arguments.Constructor("rank")),
                Format(row.Rank), Format(Math.Min(row.InFeatures, row.OutFeatures)), row.Path, Format(row.OutFeatures), Format(row.InFeatures)));
        }
    }

    /// <summary>The Rank argument of the narrowest [LoRAOverride] that gives <paramref name="row"/> its rank.</summary>
    private static Location? OverrideRank(ModelAnalysis model, AdapterSpec spec, PlanRowSpec row, INamedTypeSymbol? overrideClass, CancellationToken cancellationToken)
    {
        foreach (var node in model.Tree.Nodes.Where(n => Covers(n.Path, row.Path)).OrderByDescending(n => n.Path.Length))
        {
            foreach (var attribute in node.Member.GetAttributes())
            {
                if (!KnownSymbols.Is(attribute.AttributeClass, overrideClass)) continue;
                var named = attribute.NamedArguments.ToDictionary(n => n.Key, n => n.Value.Value);
                if (named.TryGetValue("Adapter", out var adapter) && adapter is string a && a != spec.Name) continue;
                if (named.TryGetValue("Rank", out var rank) && rank is int r && r == row.Rank)
                {
                    var arguments = AttributeArguments.Of(attribute, cancellationToken);
                    return arguments.At(arguments.Named("Rank"));
                }
            }
        }
        return null;
    }

    /// <summary>True when member template <paramref name="member"/> is concrete layer path <paramref name="path"/> or one of its ancestors.</summary>
    private static bool Covers(string member, string path)
    {
        var memberSegments = member.Split('.');
        var pathSegments = path.Split('.');
        if (memberSegments.Length > pathSegments.Length) return false;
        for (int k = 0; k < memberSegments.Length; k++)
        {
            bool same = memberSegments[k] == "{i}" ? pathSegments[k].Length > 0 && pathSegments[k].All(c => c >= '0' && c <= '9') : memberSegments[k] == pathSegments[k];
            if (!same) return false;
        }
        return true;
    }

    private static string Format(double value) => value.ToString("G4", CultureInfo.InvariantCulture);

    private static string Format(long value) => value.ToString(CultureInfo.InvariantCulture);
}
