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
/// Checks the class that carries PeftGen attributes: the companions ([Quantize], [LoRAPlus], [ModelConfig], [DeltaLoRA],
/// [LayerDrop], [LayerwiseLearningRate]) need a method attribute they work with (PEFT011; [LayerwiseLearningRate] does not
/// work with prompt learning, whose encoder lies outside the decoder layers); an adapter class must be
/// partial (PEFT001) and its adapters need distinct names (PEFT012).
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
        var methods = MethodParser.MethodAttributes(type);
        var companions = type.GetAttributes().Where(a => Companion(a.AttributeClass, known) != null).ToList();
        if (methods.Count == 0 && companions.Count == 0) return;

        if (methods.Count == 0)
        {
            foreach (var companion in companions)
            {
                context.ReportDiagnostic(Diagnostic.Create(
                    DiagnosticCatalog.IncompatibleSettings,
                    AttributeArguments.Of(companion, context.CancellationToken).Location,
                    "[" + ShortName(companion) + "]",
                    "a class without [LoRA]",
                    Companion(companion.AttributeClass, known) + "; add a [LoRA(rank, targets)] (or another method) attribute or remove [" + ShortName(companion) + "]"));
            }
            return;
        }

        // The class's method is its first method attribute; companions that only apply to other methods are errors.
        string method = MethodParser.ShortName(methods[0]);
        foreach (var companion in companions)
        {
            string? supported = SupportedWith(companion.AttributeClass, known);
            if (supported == null || supported.Split(',').Contains(method)) continue;
            context.ReportDiagnostic(Diagnostic.Create(
                DiagnosticCatalog.IncompatibleSettings,
                AttributeArguments.Of(companion, context.CancellationToken).Location,
                "[" + ShortName(companion) + "]",
                "[" + method + "]",
                (KnownSymbols.AttributeName(companion.AttributeClass) == KnownSymbols.LayerwiseLearningRateAttribute ? PromptEncoderHasNoDepth
                    : "it applies to " + string.Join(" and ", supported.Split(',').Select(m => "[" + m + "]")) + " only")
                + "; remove it or change the method"));
        }

        // Without a method attribute nothing is generated, so only adapter classes need to be partial.
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

    /// <summary>What a companion attribute is for (its PEFT011 reason), or null when the attribute is no companion.</summary>
    private static string? Companion(INamedTypeSymbol? attribute, KnownSymbols known) =>
        KnownSymbols.Is(attribute, known.Quantize) ? "it quantizes the layers the adapters target, and there are none"
        : KnownSymbols.Is(attribute, known.LoRAPlus) ? "it sets the learning rate of the adapters' B matrices, and there are none"
        : KnownSymbols.Is(attribute, known.ModelConfig) ? "it gives the shapes the adapters are checked and planned against, and there are none"
        : KnownSymbols.AttributeName(attribute) switch
        {
            KnownSymbols.DeltaLoRAAttribute => "it moves the base weights by the adapters' updates, and there are none",
            KnownSymbols.LayerDropAttribute => "it skips decoder layers while a PEFT method trains, and none is declared",
            KnownSymbols.LayerwiseLearningRateAttribute => "it scales the learning rate of a PEFT method's parameters by depth, and none is declared",
            _ => null,
        };

    /// <summary>Why [LayerwiseLearningRate] does not work with prompt learning (the trainer would refuse the decay).</summary>
    private const string PromptEncoderHasNoDepth =
        "prompt learning trains only the virtual tokens' encoder, which lies outside the decoder layers, so there is no depth to scale its learning rate by";

    /// <summary>The methods a companion works with (comma-separated short names), or null when it works with all.</summary>
    private static string? SupportedWith(INamedTypeSymbol? attribute, KnownSymbols known) =>
        KnownSymbols.Is(attribute, known.Quantize) ? "LoRA,VeRA"
        : KnownSymbols.Is(attribute, known.LoRAPlus) ? "LoRA"
        : KnownSymbols.AttributeName(attribute) == KnownSymbols.DeltaLoRAAttribute ? "LoRA"
        : KnownSymbols.AttributeName(attribute) == KnownSymbols.LayerwiseLearningRateAttribute ? "LoRA,VeRA,IA3,Bottleneck,SparseFineTuning"
        : null;
}
