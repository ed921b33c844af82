using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;

namespace PeftGen.Analyzers;

/// <summary>
/// Each [LoRA] the way <c>LoRAConfig.Validate</c> and <c>PeftModel</c> would check it at run time: rank, alpha and
/// dropout (PEFT002, PEFT004, PEFT005), the rank against each planned layer's shape (PEFT003), and the advice warnings on
/// scaling and QLoRA targets (PEFT013, PEFT014); and the targets of every method against the model's layers (PEFT006,
/// PEFT007, PEFT017). The rules are LoRA's (<c>Methods/LoRA.Check.cs</c>) and <see cref="TargetRules"/>.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class LoRAAttributeAnalyzer() : PeftAnalyzer(
    DiagnosticCatalog.InvalidRank, DiagnosticCatalog.RankTooLarge, DiagnosticCatalog.InvalidAlpha, DiagnosticCatalog.InvalidDropout,
    DiagnosticCatalog.UnknownTarget, DiagnosticCatalog.TargetNotLinear, DiagnosticCatalog.UnusualScaling,
    DiagnosticCatalog.QLoRAOnFewTargets, DiagnosticCatalog.InvalidTargetRegex);
