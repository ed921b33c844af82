using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;

namespace PeftGen.Analyzers;

/// <summary>
/// The method attributes and the training companions, the way the runtime's configs and models would check them: one
/// method per class (PEFT019), Delta-LoRA on a 4-bit base (PEFT020), LoRA variants that cannot be combined (PEFT021),
/// settings out of range (PEFT022), IA3 feed-forward layers outside the targets (PEFT023), virtual token counts
/// (PEFT024), bottleneck widths against the model (PEFT025), and methods that need a Llama model (PEFT026). Each
/// method's rules are in <c>Methods/&lt;Method&gt;.Check.cs</c>.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class MethodAttributeAnalyzer() : PeftAnalyzer(
    DiagnosticCatalog.MultipleMethods, DiagnosticCatalog.DeltaLoRAOnQuantizedBase, DiagnosticCatalog.IncompatibleLoRAVariants,
    DiagnosticCatalog.InvalidMethodSetting, DiagnosticCatalog.FeedForwardNotTargeted, DiagnosticCatalog.VirtualTokensOutOfRange,
    DiagnosticCatalog.BottleneckTooWide, DiagnosticCatalog.MethodNeedsLlama);
