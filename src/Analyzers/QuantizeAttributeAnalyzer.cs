using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;

namespace PeftGen.Analyzers;

/// <summary>
/// [Quantize] (<see cref="CompanionRules"/>): the block size must be one <c>QuantizedWeight</c> accepts (PEFT009), and
/// should divide every quantized layer's weight count so no block is partial (PEFT010, where the plan knows the shapes).
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class QuantizeAttributeAnalyzer() : PeftAnalyzer(
    DiagnosticCatalog.InvalidBlockSize, DiagnosticCatalog.BlockSizeDoesNotDivide);
