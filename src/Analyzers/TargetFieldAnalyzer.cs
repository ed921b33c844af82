using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Generator.Methods;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>
/// Checks the members that hold layers: a targeted layer field must be writable so the adapter can replace it
/// (PEFT008), and [LoRAOverride] / [NoLoRA] must sit where an adapter targets a linear layer (PEFT018). A module type
/// may be reached from several models, so a field is reported once, and an override at the end of the compilation, once
/// no model it is reached from turned out to use it.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class TargetFieldAnalyzer() : PeftAnalyzer(DiagnosticCatalog.ReadOnlyTarget, DiagnosticCatalog.OverrideWithoutEffect)
{
    private protected override void Start(CompilationStartAnalysisContext start, PeftCompilation peft)
    {
        var state = new State(peft);
        start.RegisterSymbolAction(state.AnalyzeMember, SymbolKind.Field, SymbolKind.Property);
        start.RegisterSymbolAction(state.AnalyzeModel, SymbolKind.NamedType);
        start.RegisterCompilationEndAction(state.ReportUnusedOverrides);
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
            foreach (var (attribute, spec) in Overrides(context.Symbol))
            {
                var type = context.Symbol switch
                {
                    IFieldSymbol f => f.Type,
                    IPropertySymbol p => p.Type,
                    _ => null,
                };
                string? reason = !KnownSymbols.DerivesFrom(type, _known.Module) ? "'" + context.Symbol.Name + "' does not hold a module"
                    : spec.ChangesNothing ? "it sets neither Rank nor Alpha"
                    : null;
                if (reason != null) Report(context.ReportDiagnostic, attribute, context.Symbol.Name, reason, context.CancellationToken);
            }
        }

        /// <summary>The fields and overrides of a LoRA model's modules.</summary>
        public void AnalyzeModel(SymbolAnalysisContext context)
        {
            if (peft.Model((INamedTypeSymbol)context.Symbol, context.CancellationToken) is not { Tree: { } tree } model
                || model.Declaration.Method?.Spec is not LoRASpec lora) return;
            var adapters = lora.Adapters.ToList();
            foreach (var node in tree.Nodes)
            {
                if (node.IsLinear && node.Member is IFieldSymbol { IsReadOnly: true } field
                    && adapters.Any(a => Adapts(a, node.Path)) && ReadonlyModifier(field, context.CancellationToken) is { } modifier
                    && _reportedFields.TryAdd(field, true))
                {
                    context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.ReadOnlyTarget, modifier, field.Name));
                }

                foreach (var (attribute, spec) in Overrides(node.Member))
                {
                    if (attribute.ApplicationSyntaxReference is not { } written || spec.ChangesNothing) continue;
                    string? reason = tree.IsComplete ? WhyUnused(spec, node, model, tree, adapters) : null;
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

        private static string? WhyUnused(MemberOverrideSpec spec, ModuleNode node, ModelAnalysis model, ModuleWalker tree, List<AdapterSpec> adapters)
        {
            var applicable = adapters.Where(a => spec.Adapter == null || a.Name == spec.Adapter).ToList();
            if (applicable.Count == 0) return "'" + model.Type.Name + "' has no adapter named '" + spec.Adapter + "'";
            var layers = tree.Linears.Where(l => l.Path == node.Path || l.Path.StartsWith(node.Path + ".", StringComparison.Ordinal)).ToList();
            if (layers.Count == 0) return "there is no linear layer under '" + node.Path + "'";
            return layers.Any(l => applicable.Any(a => Adapts(a, l.Path))) ? null : "no adapter of '" + model.Type.Name + "' targets a linear layer there";
        }

        private static bool Adapts(AdapterSpec adapter, string path) =>
            TargetMatcher.MayTarget(adapter.Targets, path) && !adapter.Exclude.Any(e => TargetMatcher.MayMatchName(path, e));

        /// <summary>The member's [LoRAOverride] and [NoLoRA] attributes, read as the generator reads them.</summary>
        private IEnumerable<(AttributeData Attribute, MemberOverrideSpec Spec)> Overrides(ISymbol member) =>
            member.GetAttributes().Select(a => (a, ModuleWalker.ReadOverride(_known, a, member.Name))).Where(o => o.Item2 != null).Select(o => (o.a, o.Item2!));

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
