using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Diagnostics;
using PeftGen.Generator.Parsing;

namespace PeftGen.Analyzers;

/// <summary>
/// Checks the class that carries PeftGen attributes: [Quantize], [LoRAPlus] and [ModelConfig] need a [LoRA] (PEFT011);
/// an adapter class must be partial (PEFT001) and its adapters need distinct names (PEFT012).
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class AdapterClassAnalyzer : DiagnosticAnalyzer
{
    /// <inheritdoc />
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; } = ImmutableArray.Create(
        DiagnosticCatalog.ClassNotPartial, DiagnosticCatalog.IncompatibleSettings, DiagnosticCatalog.DuplicateAdapterName);

    /// <inheritdoc />
    public override void Initialize(AnalysisContext context)
    {
        context.EnableConcurrentExecution();
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.RegisterCompilationStartAction(start =>
        {
            if (PeftCompilation.From(start.Compilation, start.Options) is not { } peft) return;
            start.RegisterSymbolAction(symbol => Analyze(symbol, peft.Known), SymbolKind.NamedType);
        });
    }

    private static void Analyze(SymbolAnalysisContext context, KnownSymbols known)
    {
        var type = (INamedTypeSymbol)context.Symbol;
        var adapters = AdapterDeclaration.All(type);
        var companions = new[] { known.Quantize, known.LoRAPlus, known.ModelConfig }
            .Select(c => ModelAnalysis.Find(type, c))
            .Where(a => a != null)
            .Select(a => a!)
            .ToList();
        if (adapters.IsEmpty && companions.Count == 0) return;

        if (adapters.IsEmpty)
        {
            foreach (var companion in companions)
            {
                context.ReportDiagnostic(Diagnostic.Create(
                    DiagnosticCatalog.IncompatibleSettings,
                    AttributeArguments.Of(companion, context.CancellationToken).Location,
                    "[" + ShortName(companion) + "]",
                    "a class without [LoRA]",
                    Purpose(companion, known) + "; add a [LoRA(rank, targets)] attribute or remove [" + ShortName(companion) + "]"));
            }
            return;
        }

        // Without [LoRA] nothing is generated, so only adapter classes need to be partial.
        if (!type.IsGenericType && !IsPartial(type) && Identifier(type, context) is { } identifier)
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.ClassNotPartial, identifier, type.Name));

        var seen = new HashSet<string>();
        foreach (var adapter in adapters)
        {
            if (seen.Add(adapter.Spec.Name)) continue;
            var arguments = AttributeArguments.Of(adapter.Data, context.CancellationToken);
            context.ReportDiagnostic(Diagnostic.Create(
                DiagnosticCatalog.DuplicateAdapterName, arguments.At(arguments.Named("Name")), adapter.Spec.Name, type.Name));
        }
    }

    /// <summary>True when the class and every type containing it are partial, as the generated declarations need.</summary>
    private static bool IsPartial(INamedTypeSymbol type)
    {
        for (var t = type; t != null; t = t.ContainingType)
        {
            if (!t.DeclaringSyntaxReferences.All(r => r.GetSyntax() is TypeDeclarationSyntax d && d.Modifiers.Any(SyntaxKind.PartialKeyword)))
                return false;
        }
        return true;
    }

    private static Location? Identifier(INamedTypeSymbol type, SymbolAnalysisContext context) =>
        type.DeclaringSyntaxReferences
            .Select(r => r.GetSyntax(context.CancellationToken))
            .OfType<TypeDeclarationSyntax>()
            .Select(d => d.Identifier.GetLocation())
            .FirstOrDefault();

    private static string ShortName(AttributeData attribute)
    {
        string name = attribute.AttributeClass!.Name;
        return name.EndsWith("Attribute", System.StringComparison.Ordinal) ? name.Substring(0, name.Length - "Attribute".Length) : name;
    }

    private static string Purpose(AttributeData attribute, KnownSymbols known) =>
        KnownSymbols.Is(attribute.AttributeClass, known.Quantize) ? "it quantizes the layers the adapters target, and there are none"
        : KnownSymbols.Is(attribute.AttributeClass, known.LoRAPlus) ? "it sets the learning rate of the adapters' B matrices, and there are none"
        : "it gives the shapes the adapters are checked and planned against, and there are none";
}
