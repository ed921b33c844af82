using System.Collections.Immutable;
using System.Globalization;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;

namespace PeftGen.Analyzers;

/// <summary>
/// Checks [Quantize]: the block size must be one <c>QuantizedWeight</c> accepts (PEFT009), and should divide every
/// quantized layer's weight count so no block is partial (PEFT010, where the plan knows the shapes).
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class QuantizeAttributeAnalyzer : DiagnosticAnalyzer
{
    // QuantizedWeight.MinBlockSize and MaxBlockSize: the analyzers cannot reference the runtime.
    private const int MinBlockSize = 32;
    private const int MaxBlockSize = 4096;

    /// <inheritdoc />
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; } = ImmutableArray.Create(
        DiagnosticCatalog.InvalidBlockSize, DiagnosticCatalog.BlockSizeDoesNotDivide);

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
        if (ModelAnalysis.Find(type, peft.Known.Quantize) is not { } attribute) return;
        var arguments = AttributeArguments.Of(attribute, context.CancellationToken);
        var at = arguments.At(arguments.Named("BlockSize"));
        int blockSize = ModelAnalysis.ReadQuantize(attribute).BlockSize;
        if (blockSize < MinBlockSize || blockSize > MaxBlockSize || (blockSize & (blockSize - 1)) != 0)
        {
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.InvalidBlockSize, at, Format(blockSize)));
            return;
        }

        var rows = peft.Model(type, context.CancellationToken)?.Plan.Adapters
            .SelectMany(a => a.Plan ?? default)
            .Where(r => r.Quantized && (long)r.InFeatures * r.OutFeatures % blockSize != 0)
            .ToList();
        if (rows is { Count: > 0 })
        {
            var row = rows[0];
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.BlockSizeDoesNotDivide, at,
                Format(blockSize), Format((long)row.InFeatures * row.OutFeatures), row.Path));
        }
    }

    private static string Format(long value) => value.ToString(CultureInfo.InvariantCulture);
}
