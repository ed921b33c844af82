using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>
/// Checks the members that hold layers: a targeted layer field must be writable so the adapter can replace it
/// (PEFT008), and [LoRAOverride] / [NoLoRA] must sit where an adapter targets a linear layer (PEFT018). A module type
/// may be reached from several models, so an override is reported at the end of the compilation, once no model it is
/// reached from turned out to use it.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class TargetFieldAnalyzer : DiagnosticAnalyzer
{
    /// <inheritdoc />
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; } = ImmutableArray.Create(
        DiagnosticCatalog.ReadOnlyTarget, DiagnosticCatalog.OverrideWithoutEffect);

    /// <inheritdoc />
    public override void Initialize(AnalysisContext context)
    {
        context.EnableConcurrentExecution();
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.RegisterCompilationStartAction(start =>
        {
            if (PeftCompilation.From(start.Compilation, start.Options) is not { } peft) return;
            var state = new State(peft);
            start.RegisterSymbolAction(state.AnalyzeMember, SymbolKind.Field, SymbolKind.Property);
            start.RegisterSymbolAction(state.AnalyzeModel, SymbolKind.NamedType);
            start.RegisterCompilationEndAction(state.ReportUnusedOverrides);
        });
    }

    private sealed class State(PeftCompilation peft)
    {
        private readonly KnownSymbols _known = peft.Known;
        private readonly ConcurrentDictionary<IFieldSymbol, bool> _reportedFields = new(SymbolEqualityComparer.Default);

        // Each override reached from a model, by where it is written: the reason to report, null once a model uses it.
        private readonly ConcurrentDictionary<(SyntaxTree, TextSpan), (AttributeData Attribute, string Member, string? Reason)> _overrides = new();

        /// <summary>Overrides on members that hold no module, or that change nothing, have no effect in any model.</summary>
        public void AnalyzeMember(SymbolAnalysisContext context)
        {
            foreach (var attribute in Overrides(context.Symbol))
            {
                var type = context.Symbol switch
                {
                    IFieldSymbol f => f.Type,
                    IPropertySymbol p => p.Type,
                    _ => null,
                };
                string? reason = !KnownSymbols.DerivesFrom(type, _known.Module) ? "'" + context.Symbol.Name + "' does not hold a module"
                    : IsEmptyOverride(attribute) ? "it sets neither Rank nor Alpha"
                    : null;
                if (reason != null) Report(context.ReportDiagnostic, attribute, context.Symbol.Name, reason, context.CancellationToken);
            }
        }

        public void AnalyzeModel(SymbolAnalysisContext context)
        {
            if (peft.Model((INamedTypeSymbol)context.Symbol, context.CancellationToken) is not { } model) return;
            var adapters = model.Adapters.Select(a => a.Spec).ToList();
            foreach (var node in model.Tree.Nodes)
            {
                if (node.IsLinear && node.Member is IFieldSymbol { IsReadOnly: true } field
                    && adapters.Any(a => Adapts(a, node.Path)) && ReadonlyModifier(field, context.CancellationToken) is { } modifier
                    && _reportedFields.TryAdd(field, true))
                {
                    context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.ReadOnlyTarget, modifier, field.Name));
                }

                foreach (var attribute in Overrides(node.Member))
                {
                    if (attribute.ApplicationSyntaxReference is not { } written || IsEmptyOverride(attribute)) continue;
                    string? reason = model.Tree.IsComplete ? WhyUnused(attribute, node, model, adapters) : null;
                    _overrides.AddOrUpdate((written.SyntaxTree, written.Span), (attribute, node.Member.Name, reason),
                        (_, seen) => seen.Reason == null || reason == null ? (seen.Attribute, seen.Member, null) : seen);
                }
            }
        }

        public void ReportUnusedOverrides(CompilationAnalysisContext context)
        {
            foreach (var (attribute, member, reason) in _overrides.Values)
            {
                if (reason != null) Report(context.ReportDiagnostic, attribute, member, reason, context.CancellationToken);
            }
        }

        private static string? WhyUnused(AttributeData attribute, ModuleNode node, ModelAnalysis model, List<AdapterSpec> adapters)
        {
            var name = attribute.NamedArguments.FirstOrDefault(n => n.Key == "Adapter").Value.Value as string;
            var applicable = adapters.Where(a => name == null || a.Name == name).ToList();
            if (applicable.Count == 0) return "'" + model.Type.Name + "' has no adapter named '" + name + "'";
            var layers = model.Tree.Linears.Where(l => l.Path == node.Path || l.Path.StartsWith(node.Path + ".", StringComparison.Ordinal)).ToList();
            if (layers.Count == 0) return "there is no linear layer under '" + node.Path + "'";
            return layers.Any(l => applicable.Any(a => Adapts(a, l.Path))) ? null : "no adapter of '" + model.Type.Name + "' targets a linear layer there";
        }

        private static bool Adapts(AdapterSpec adapter, string path) =>
            TargetNames.MayTarget(adapter.Targets, path) && !adapter.Exclude.Any(e => TargetNames.Matches(path, e));

        private IEnumerable<AttributeData> Overrides(ISymbol member) =>
            member.GetAttributes().Where(a => KnownSymbols.Is(a.AttributeClass, _known.LoRAOverride) || KnownSymbols.Is(a.AttributeClass, _known.NoLoRA));

        private bool IsEmptyOverride(AttributeData attribute) =>
            KnownSymbols.Is(attribute.AttributeClass, _known.LoRAOverride)
            && !attribute.NamedArguments.Any(n => (n.Key == "Rank" && n.Value.Value is int r && r > 0) || (n.Key == "Alpha" && ModelParser.ToDouble(n.Value) > 0));

        private static void Report(Action<Diagnostic> report, AttributeData attribute, string member, string reason, CancellationToken cancellationToken)
        {
            var arguments = AttributeArguments.Of(attribute, cancellationToken);
            if (arguments.Syntax == null) return;
            report(Diagnostic.Create(DiagnosticCatalog.OverrideWithoutEffect, arguments.Location,
                attribute.AttributeClass!.Name.Replace("Attribute", ""), member, reason));
        }

        private static Location? ReadonlyModifier(IFieldSymbol field, CancellationToken cancellationToken) =>
            field.DeclaringSyntaxReferences
                .Select(r => r.GetSyntax(cancellationToken))
                .OfType<VariableDeclaratorSyntax>()
                .Select(v => (v.Parent?.Parent as FieldDeclarationSyntax)?.Modifiers.FirstOrDefault(m => m.IsKind(SyntaxKind.ReadOnlyKeyword)))
                .Where(m => m is { } token && token.IsKind(SyntaxKind.ReadOnlyKeyword))
                .Select(m => m!.Value.GetLocation())
                .FirstOrDefault();
    }
}
