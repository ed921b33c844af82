using Microsoft.CodeAnalysis;

namespace PeftGen.Analyzers;

/// <summary>
/// Every PeftGen diagnostic, in one place. Ids are stable and never reused; each has a page at
/// docs/diagnostics/PEFTnnn.md and a row in AnalyzerReleases.Unshipped.md.
/// </summary>
internal static class DiagnosticCatalog
{
    private const string HelpBase = "https://github.com/peftgen/peftgen/blob/main/docs/diagnostics/";
    private const string Usage = "PeftGen.Usage";
    private const string Configuration = "PeftGen.Configuration";

    /// <summary>Property key of a diagnostic carrying the closest known target name (used by the code fix).</summary>
    public const string SuggestionProperty = "Suggestion";

    /// <summary>Property key of a PEFT006 diagnostic carrying the target entry that matches nothing, as written in the list.</summary>
    public const string TargetProperty = "Target";

    public static readonly DiagnosticDescriptor ClassNotPartial = Error("PEFT001", Usage,
        "Adapter class must be partial",
        "'{0}' has PeftGen attributes but is not partial; make it (and its containing types) partial so the generator can add its adapter code");

    public static readonly DiagnosticDescriptor InvalidRank = Error("PEFT002", Configuration,
        "LoRA rank must be at least 1",
        "LoRA rank {0} is invalid: use a rank of at least 1 (8 to 64 is typical)");

    public static readonly DiagnosticDescriptor RankTooLarge = Error("PEFT003", Configuration,
        "LoRA rank exceeds the layer's smaller dimension",
        Generator.Spec.ShapeMessages.RankTooLarge); // generated code throws the same text when shapes are only known at run time

    public static readonly DiagnosticDescriptor InvalidAlpha = Error("PEFT004", Configuration,
        "LoRA alpha must be greater than 0",
        "LoRA alpha {0} is invalid: alpha must be greater than 0 (the scaling is alpha / rank)");

    public static readonly DiagnosticDescriptor InvalidDropout = Error("PEFT005", Configuration,
        "LoRA dropout must be in [0, 1)",
        "LoRA dropout {0} is invalid: use a probability in [0, 1) (0.05 is typical; 0.1 for small models)");

    // PEFT006, PEFT007 and PEFT017 fire on the targets of [LoRA], [VeRA], [IA3] and [SparseFineTuning]: {0} names the method.
    public static readonly DiagnosticDescriptor UnknownTarget = Error("PEFT006", Configuration,
        "Target matches no layer",
        "{0} target '{1}' matches no linear layer of '{2}'.{3}");

    public static readonly DiagnosticDescriptor TargetNotLinear = Error("PEFT007", Configuration,
        "Target is not an adaptable layer",
        "{0} target '{1}' matches '{2}' of type {3}, which is not a linear layer; {0} adapts linear layers only: name the linear layers inside it or use \"all-linear\"");

    public static readonly DiagnosticDescriptor ReadOnlyTarget = Error("PEFT008", Usage,
        "Targeted layer field is read-only",
        "Field '{0}' is targeted by LoRA but is readonly; the adapter must replace it, so remove 'readonly'");

    public static readonly DiagnosticDescriptor InvalidBlockSize = Error("PEFT009", Configuration,
        "Quantization block size must be a power of two in 32..4096",
        "Quantization block size {0} is invalid: use a power of two from 32 to 4096 (64 is QLoRA's)");

    public static readonly DiagnosticDescriptor BlockSizeDoesNotDivide = Warning("PEFT010", Configuration,
        "Quantization block size does not divide the layer",
        "Block size {0} does not divide the {1} weights of '{2}'; its last block is partial, which wastes scale storage — choose a block size that divides in × out");

    public static readonly DiagnosticDescriptor IncompatibleSettings = Error("PEFT011", Configuration,
        "Incompatible PeftGen settings",
        "{0} cannot be combined with {1}: {2}");

    public static readonly DiagnosticDescriptor DuplicateAdapterName = Error("PEFT012", Usage,
        "Duplicate adapter name",
        "Adapter name '{0}' is declared more than once on '{1}'; give each [LoRA] a distinct Name");

    public static readonly DiagnosticDescriptor UnusualScaling = Warning("PEFT013", Configuration,
        "LoRA scaling far from the usual range",
        "Adapter '{0}' scales its update by {1} (alpha {2}, rank {3}{4}); values far outside 0.5–4 usually mean a mistyped alpha or rank");

    public static readonly DiagnosticDescriptor QLoRAOnFewTargets = Warning("PEFT014", Configuration,
        "QLoRA on attention q/v only",
        "QLoRA with LoRA on {0} only trails 16-bit fine-tuning; the QLoRA paper adapts every linear layer: use targets \"all-linear\"");

    public static readonly DiagnosticDescriptor ModelConfigNotFound = Error("PEFT015", Usage,
        "Model config file not passed to the compiler",
        "[ModelConfig(\"{0}\")] names no AdditionalFile; add <AdditionalFiles Include=\"{0}\" /> to the project so shapes can be checked at compile time");

    public static readonly DiagnosticDescriptor InvalidModelConfig = Error("PEFT016", Usage,
        "Model config file is invalid",
        "{0}: {1}");

    public static readonly DiagnosticDescriptor InvalidTargetRegex = Error("PEFT017", Configuration,
        "Target regex is invalid",
        "{0} target regex '{1}' is invalid: {2}");

    public static readonly DiagnosticDescriptor OverrideWithoutEffect = Warning("PEFT018", Configuration,
        "LoRA override has no effect",
        "[{0}] on '{1}' has no effect: {2}; move it to a targeted layer, fix it, or remove it");

    public static readonly DiagnosticDescriptor MultipleMethods = Error("PEFT019", Usage,
        "More than one PEFT method on a class",
        "'{0}' declares both [{1}] and [{2}]; a class declares one PEFT method, so switching methods means changing that one attribute: remove [{2}] or [{1}]");

    public static readonly DiagnosticDescriptor DeltaLoRAOnQuantizedBase = Error("PEFT020", Configuration,
        "Delta-LoRA on a 4-bit base",
        "[DeltaLoRA] moves the base weights after every step, but [Quantize] stores them in 4 bits, where updates of ≈ λ·s·ΔBA are far below one quantization step and would round away; PeftGen does not re-quantize: remove [Quantize] to train a float base, or [DeltaLoRA] to train plain QLoRA");

    public static readonly DiagnosticDescriptor IncompatibleLoRAVariants = Error("PEFT021", Configuration,
        "LoRA variants cannot be combined",
        "{0} cannot be combined with {1}: {2}");

    public static readonly DiagnosticDescriptor InvalidMethodSetting = Error("PEFT022", Configuration,
        "PEFT method setting out of range",
        "{0} {1} is invalid: {2}");

    public static readonly DiagnosticDescriptor FeedForwardNotTargeted = Error("PEFT023", Configuration,
        "IA3 feed-forward layer is not a target",
        "IA3 feed-forward module '{0}' is not in the target list ({1}): feed-forward modules must be a subset of the targets; add '{0}' to the targets or remove it from FeedForward");

    public static readonly DiagnosticDescriptor VirtualTokensOutOfRange = Error("PEFT024", Configuration,
        "Virtual token count out of range",
        "{0} virtual tokens are invalid: {1}");

    public static readonly DiagnosticDescriptor BottleneckTooWide = Error("PEFT025", Configuration,
        "Bottleneck does not fit the model",
        "{0}; a bottleneck must be 1 to {1} channels wide (the hidden size in '{2}')");

    public static readonly DiagnosticDescriptor MethodNeedsLlama = Error("PEFT026", Usage,
        "PEFT method needs a Llama model",
        "[{0}] works on a LlamaForCausalLM's decoder stack, but '{1}' does not derive from LlamaForCausalLM; derive from it or choose a method that adapts linear layers ([LoRA], [VeRA], [IA3])");

    /// <summary>Every descriptor, for analyzers' SupportedDiagnostics and the docs test.</summary>
    public static readonly DiagnosticDescriptor[] All =
    [
        ClassNotPartial, InvalidRank, RankTooLarge, InvalidAlpha, InvalidDropout, UnknownTarget, TargetNotLinear,
        ReadOnlyTarget, InvalidBlockSize, BlockSizeDoesNotDivide, IncompatibleSettings, DuplicateAdapterName,
        UnusualScaling, QLoRAOnFewTargets, ModelConfigNotFound, InvalidModelConfig, InvalidTargetRegex, OverrideWithoutEffect,
        MultipleMethods, DeltaLoRAOnQuantizedBase, IncompatibleLoRAVariants, InvalidMethodSetting, FeedForwardNotTargeted,
        VirtualTokensOutOfRange, BottleneckTooWide, MethodNeedsLlama,
    ];

    private static DiagnosticDescriptor Error(string id, string category, string title, string message) =>
        new(id, title, message, category, DiagnosticSeverity.Error, isEnabledByDefault: true, helpLinkUri: HelpBase + id + ".md");

    private static DiagnosticDescriptor Warning(string id, string category, string title, string message) =>
        new(id, title, message, category, DiagnosticSeverity.Warning, isEnabledByDefault: true, helpLinkUri: HelpBase + id + ".md");
}
