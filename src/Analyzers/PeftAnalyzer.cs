using System.Collections.Immutable;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;

namespace PeftGen.Analyzers;

/// <summary>
/// A PeftGen analyzer: it reports, for each class with PeftGen attributes, the diagnostics it owns among those the rules
/// found in the class's shared <see cref="ModelAnalysis"/>. The analyzers differ only in the diagnostics they own (their
/// <see cref="DiagnosticAnalyzer.SupportedDiagnostics"/>), which lets a host switch them off by group.
/// </summary>
public abstract class PeftAnalyzer : DiagnosticAnalyzer
{
    private protected PeftAnalyzer(params DiagnosticDescriptor[] supported) => SupportedDiagnostics = ImmutableArray.Create(supported);

    /// <inheritdoc />
    public sealed override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; }

    /// <inheritdoc />
    public sealed override void Initialize(AnalysisContext context)
    {
        context.EnableConcurrentExecution();
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.RegisterCompilationStartAction(start =>
        {
            if (PeftCompilation.From(start.Compilation, start.Options) is { } peft) Start(start, peft);
        });
    }

    /// <summary>Registers the analyzer's actions for a compilation that references the runtime.</summary>
    private protected virtual void Start(CompilationStartAnalysisContext start, PeftCompilation peft) =>
        start.RegisterSymbolAction(symbol => ReportOwn(symbol, peft), SymbolKind.NamedType);

    private void ReportOwn(SymbolAnalysisContext context, PeftCompilation peft)
    {
        if (peft.Model((INamedTypeSymbol)context.Symbol, context.CancellationToken) is not { } model) return;
        foreach (var diagnostic in model.Diagnostics.Where(d => SupportedDiagnostics.Contains(d.Descriptor)))
            context.ReportDiagnostic(diagnostic);
    }
}
