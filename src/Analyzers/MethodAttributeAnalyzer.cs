using System.Collections.Immutable;
using System.Globalization;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>
/// Checks the method attributes other than [LoRA]'s basics, and the training companions, the way the runtime's configs
/// and models would at run time: one method per class (PEFT019), Delta-LoRA on a 4-bit base (PEFT020), LoRA variants
/// that cannot be combined (PEFT021), settings out of range (PEFT022), IA3 feed-forward layers outside the targets
/// (PEFT023), virtual token counts (PEFT024), bottleneck widths against the model (PEFT025), and methods that need a
/// Llama model (PEFT026).
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class MethodAttributeAnalyzer : DiagnosticAnalyzer
{
    /// <inheritdoc />
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; } = ImmutableArray.Create(
        DiagnosticCatalog.MultipleMethods, DiagnosticCatalog.DeltaLoRAOnQuantizedBase, DiagnosticCatalog.IncompatibleLoRAVariants,
        DiagnosticCatalog.InvalidMethodSetting, DiagnosticCatalog.FeedForwardNotTargeted, DiagnosticCatalog.VirtualTokensOutOfRange,
        DiagnosticCatalog.BottleneckTooWide, DiagnosticCatalog.MethodNeedsLlama);

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
        var methods = MethodParser.MethodAttributes(type);
        if (methods.Count == 0 || !KnownSymbols.DerivesFrom(type, peft.Known.Module)) return;
        var first = methods[0];
        string method = MethodParser.ShortName(first);
        foreach (var other in methods.Skip(1).Where(m => !SymbolEqualityComparer.Default.Equals(m.AttributeClass, first.AttributeClass)))
        {
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.MultipleMethods,
                Arguments(other, context).Location, type.Name, method, MethodParser.ShortName(other)));
        }

        bool llama = peft.Known.IsLlama(type);
        var config = ModelAnalysis.Find(type, peft.Known.ModelConfig) is { ConstructorArguments.Length: 1 } c
            ? AdapterPlanner.FindConfig(c.ConstructorArguments[0].Value as string, peft.Configs(context.CancellationToken))
            : null;
        CheckTraining(context, type, method == "LoRA", llama, peft.Known);
        switch (MethodParser.Read(first))
        {
            case VeraSpec vera:
                CheckVera(context, vera, Arguments(first, context));
                break;
            case IA3Spec ia3:
                CheckIA3(context, ia3, Arguments(first, context));
                break;
            case PromptSpec prompt:
                CheckPrompt(context, prompt, Arguments(first, context), method, llama, config);
                break;
            case BottleneckSpec bottleneck:
                CheckBottleneck(context, bottleneck, Arguments(first, context), llama, config);
                break;
            case SparseSpec sparse:
                CheckSparse(context, sparse, Arguments(first, context));
                break;
        }
    }

    private static AttributeArguments Arguments(AttributeData attribute, SymbolAnalysisContext context) =>
        AttributeArguments.Of(attribute, context.CancellationToken);

    private static void CheckTraining(SymbolAnalysisContext context, INamedTypeSymbol type, bool lora, bool llama, KnownSymbols known)
    {
        foreach (var attribute in type.GetAttributes())
        {
            var arguments = Arguments(attribute, context);
            switch (KnownSymbols.AttributeName(attribute.AttributeClass))
            {
                case KnownSymbols.DeltaLoRAAttribute when lora:
                {
                    var delta = MethodParser.ReadTraining(type)!.DeltaLoRA!;
                    if (delta.StartStep < 0)
                        Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("startStep")), "Delta-LoRA start step", Format(delta.StartStep), "use 0 or more optimizer steps of warm-up (500 is the paper's)");
                    if (!(delta.UpdateRatio > 0) || double.IsInfinity(delta.UpdateRatio))
                        Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("updateRatio")), "Delta-LoRA update ratio", Format(delta.UpdateRatio), "λ must be finite and greater than 0 (2 is the paper's)");
                    if (ModelAnalysis.Find(type, known.Quantize) != null)
                        context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.DeltaLoRAOnQuantizedBase, arguments.Location));
                    CheckLoRAVariants(context, type, arguments);
                    break;
                }
                case KnownSymbols.LayerDropAttribute:
                {
                    var drop = MethodParser.ReadTraining(type)!.LayerDrop!;
                    if (!(drop.Probability >= 0 && drop.Probability < 1))
                        Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("probability")), "Layer drop probability", Format(drop.Probability), "use a probability in [0, 1) (0.1 is typical); 1 would skip every layer");
                    if (!llama)
                        context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.MethodNeedsLlama, arguments.Location, "LayerDrop", type.Name));
                    break;
                }
                case KnownSymbols.LayerwiseLearningRateAttribute:
                {
                    double decay = MethodParser.ReadTraining(type)!.LayerwiseDecay!.Value;
                    if (!(decay > 0 && decay <= 1))
                        Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("decay")), "Layer-wise learning-rate decay", Format(decay), "use a decay γ in (0, 1] (0.8 to 0.95 is typical; 1 disables it)");
                    break;
                }
            }
        }
        if (lora) CheckLoRAVariants(context, type, null);
    }

    /// <summary>
    /// The combinations <c>LoRAVariants.Validate</c> refuses: with <paramref name="delta"/> the Delta-LoRA ones, reported on
    /// [DeltaLoRA]; without, LoRA-FA with DoRA and the gradient correction without LoRA-FA, on the setting.
    /// </summary>
    private static void CheckLoRAVariants(SymbolAnalysisContext context, INamedTypeSymbol type, AttributeArguments? delta)
    {
        foreach (var adapter in AdapterDeclaration.All(type))
        {
            var spec = adapter.Spec;
            var arguments = Arguments(adapter.Data, context);
            if (delta is { } d)
            {
                if (spec.UseDoRA)
                    Report(context, DiagnosticCatalog.IncompatibleLoRAVariants, d.Location, "[DeltaLoRA]", "UseDoRA", "DoRA renormalises W0 + s·B·A per row, so moving W by the change of s·B·A no longer follows the update; use one of them");
                if (spec.UseLoRAFA)
                    Report(context, DiagnosticCatalog.IncompatibleLoRAVariants, d.Location, "[DeltaLoRA]", "UseLoRAFA", "PeftGen supports each on its own; remove [DeltaLoRA] or UseLoRAFA");
                if (spec.Dropout != 0)
                    Report(context, DiagnosticCatalog.IncompatibleLoRAVariants, d.Location, "[DeltaLoRA]", "Dropout", "Delta-LoRA trains without dropout on the LoRA path, so that the base moves by the update the loss saw; set Dropout = 0");
                continue;
            }
            if (spec.UseLoRAFA && spec.UseDoRA)
                Report(context, DiagnosticCatalog.IncompatibleLoRAVariants, arguments.At(arguments.Named("UseLoRAFA")), "UseLoRAFA", "UseDoRA", "DoRA's backward needs the input x that LoRA-FA avoids keeping; set one of them");
            if (spec.LoRAFAGradientCorrection && !spec.UseLoRAFA)
                Report(context, DiagnosticCatalog.IncompatibleLoRAVariants, arguments.At(arguments.Named("LoRAFAGradientCorrection")), "LoRAFAGradientCorrection", "plain LoRA", "it corrects B's gradient when A is frozen; set UseLoRAFA = true too, or remove it");
        }
    }

    private static void CheckVera(SymbolAnalysisContext context, VeraSpec vera, AttributeArguments arguments)
    {
        if (vera.Rank < 1)
            Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Constructor("rank")), "VeRA rank", Format(vera.Rank), "use a rank of at least 1 (VeRA's typical rank is 256)");
        if (vera.DInitial == 0 || double.IsNaN(vera.DInitial) || double.IsInfinity(vera.DInitial))
            Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("DInitial")), "VeRA DInitial", Format(vera.DInitial), "it must be finite and non-zero: with b = 0 and d = 0 both gradients vanish and the adapter never trains (0.1 is the default)");
        if (!(vera.Dropout >= 0 && vera.Dropout < 1))
            Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("Dropout")), "VeRA dropout", Format(vera.Dropout), "use a probability in [0, 1)");
    }

    private static void CheckIA3(SymbolAnalysisContext context, IA3Spec ia3, AttributeArguments arguments)
    {
        if (ia3.Targets.Kind != TargetKind.List || ia3.FeedForward is not { Kind: TargetKind.List } feedForward) return;
        foreach (var name in feedForward.Names.Where(n => !ia3.Targets.Names.Contains(n)))
        {
            var syntax = arguments.Named("FeedForward");
            var at = TargetNames.EntryLocation(syntax, name) ?? arguments.At(syntax);
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.FeedForwardNotTargeted, at, name, string.Join(", ", ia3.Targets.Names)));
        }
    }

    private static void CheckPrompt(SymbolAnalysisContext context, PromptSpec prompt, AttributeArguments arguments, string method, bool llama, ModelConfigSpec? config)
    {
        if (!llama)
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.MethodNeedsLlama, arguments.Location, method, context.Symbol.Name));
        var tokens = arguments.At(arguments.Constructor("virtualTokens"));
        if (prompt.VirtualTokens < 1)
            Report(context, DiagnosticCatalog.VirtualTokensOutOfRange, tokens, Format(prompt.VirtualTokens), "prompt learning needs at least one virtual token (20 is PEFT's default)");
        else if (config?.MaxPositionEmbeddings is int positions && prompt.VirtualTokens >= positions)
            Report(context, DiagnosticCatalog.VirtualTokensOutOfRange, tokens, Format(prompt.VirtualTokens),
                "the virtual tokens take positions 0.." + Format(prompt.VirtualTokens - 1) + " and max_position_embeddings is " + Format(positions) + ", which leaves no position for the input; use fewer virtual tokens");
        if (prompt.EncoderHiddenSize < 0)
        {
            var at = arguments.At(arguments.Constructor("encoderHiddenSize") ?? arguments.Named("EncoderHiddenSize"));
            Report(context, DiagnosticCatalog.InvalidMethodSetting, at, "Encoder hidden size", Format(prompt.EncoderHiddenSize), "use a width of at least 1, or 0 for the method's default");
        }
        if (prompt.InitText is { Length: 0 })
            Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("InitText")), "Prompt tuning InitText", "\"\"", "give the text whose token embeddings start the virtual tokens, or leave it null for a random start");
    }

    private static void CheckBottleneck(SymbolAnalysisContext context, BottleneckSpec bottleneck, AttributeArguments arguments, bool llama, ModelConfigSpec? config)
    {
        var sizeSyntax = arguments.Constructor("size");
        if (sizeSyntax != null && bottleneck.Size < 1)
            Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(sizeSyntax), "Bottleneck size", Format(bottleneck.Size), "use a width of at least 1, or leave it out to derive it from ReductionFactor");
        if (bottleneck.Size == 0 && bottleneck.ReductionFactor < 1)
            Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("ReductionFactor")), "Bottleneck reduction factor", Format(bottleneck.ReductionFactor), "use a factor of at least 1 (16 is the default)");
        if (!llama || config?.HiddenSize is not int hidden || config.Path is not { } path) return;
        string file = path.Replace('\\', '/').Split('/').Last();
        if (bottleneck.Size > hidden)
            Report(context, DiagnosticCatalog.BottleneckTooWide, arguments.At(sizeSyntax), "Bottleneck size " + Format(bottleneck.Size) + " exceeds the hidden size " + Format(hidden), Format(hidden), file);
        else if (bottleneck.Size == 0 && bottleneck.ReductionFactor > hidden)
            Report(context, DiagnosticCatalog.BottleneckTooWide, arguments.At(arguments.Named("ReductionFactor")),
                "Reduction factor " + Format(bottleneck.ReductionFactor) + " leaves " + Format(hidden) + " / " + Format(bottleneck.ReductionFactor) + " = 0 bottleneck channels", Format(hidden), file);
    }

    private static void CheckSparse(SymbolAnalysisContext context, SparseSpec sparse, AttributeArguments arguments)
    {
        var fraction = arguments.At(arguments.Constructor("fraction"));
        if (!(sparse.Fraction > 0 && sparse.Fraction <= 1))
            Report(context, DiagnosticCatalog.InvalidMethodSetting, fraction, "Sparse fine-tuning fraction", Format(sparse.Fraction), "use a share of the entries in (0, 1] (0.01 is typical)");
        else if (sparse.Score.Value == 0 && sparse.Fraction < 1)
            Report(context, DiagnosticCatalog.InvalidMethodSetting, fraction, "Sparse fine-tuning fraction", Format(sparse.Fraction), "a fraction below 1 needs a score to rank entries by: set Score to GradientMagnitude or GradientTimesWeight, or the fraction to 1");
        if (sparse.Score.Value != 0 && sparse.CalibrationBatches < 1)
            Report(context, DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("CalibrationBatches")), "Sparse fine-tuning calibration batch count", Format(sparse.CalibrationBatches), "a score needs at least one calibration batch");
    }

    private static void Report(SymbolAnalysisContext context, DiagnosticDescriptor descriptor, Location location, params object[] arguments) =>
        context.ReportDiagnostic(Diagnostic.Create(descriptor, location, arguments));

    private static string Format(double value) => value.ToString("G4", CultureInfo.InvariantCulture);

    private static string Format(int value) => value.ToString(CultureInfo.InvariantCulture);
}
