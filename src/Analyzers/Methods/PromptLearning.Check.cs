using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using PeftGen.Analyzers;
using static PeftGen.Analyzers.CheckContext;

namespace PeftGen.Generator.Methods;

/// <summary>
/// Prompt learning: a Llama model (PEFT026), a virtual token count that leaves the input a position (PEFT024), and the
/// encoder's settings (PEFT022).
/// </summary>
internal abstract partial class PromptLearningMethod<TSpec>
{
    protected sealed override void Check(CheckContext context, TSpec prompt, ImmutableArray<AttributeData> attributes)
    {
        var arguments = context.Arguments(attributes[0]);
        if (!context.Declaration.IsLlama)
            context.Report(DiagnosticCatalog.MethodNeedsLlama, arguments.Location, Name, context.Type.Name);
        var tokens = arguments.At(arguments.Constructor("virtualTokens"));
        if (prompt.VirtualTokens < 1)
            context.Report(DiagnosticCatalog.VirtualTokensOutOfRange, tokens, Number(prompt.VirtualTokens), "prompt learning needs at least one virtual token (20 is PEFT's default)");
        else if (context.Config?.MaxPositionEmbeddings is int positions && prompt.VirtualTokens >= positions)
            context.Report(DiagnosticCatalog.VirtualTokensOutOfRange, tokens, Number(prompt.VirtualTokens),
                "the virtual tokens take positions 0.." + Number(prompt.VirtualTokens - 1) + " and max_position_embeddings is " + Number(positions) + ", which leaves no position for the input; use fewer virtual tokens");
        CheckSettings(context, prompt, arguments);
    }

    /// <summary>The settings of this method.</summary>
    protected abstract void CheckSettings(CheckContext context, TSpec prompt, AttributeArguments arguments);

    /// <summary>A negative encoder width (0 is the method's default).</summary>
    private protected static void CheckEncoderHiddenSize(CheckContext context, int size, AttributeArguments arguments)
    {
        if (size >= 0) return;
        var at = arguments.At(arguments.Constructor("encoderHiddenSize") ?? arguments.Named("EncoderHiddenSize"));
        context.Report(DiagnosticCatalog.InvalidMethodSetting, at, "Encoder hidden size", Number(size), "use a width of at least 1, or 0 for the method's default");
    }
}

internal sealed partial class PromptTuningMethod
{
    protected override void CheckSettings(CheckContext context, PromptTuningSpec prompt, AttributeArguments arguments)
    {
        if (prompt.InitText is { Length: 0 })
            context.Report(DiagnosticCatalog.InvalidMethodSetting, arguments.At(arguments.Named("InitText")), "Prompt tuning InitText", "\"\"", "give the text whose token embeddings start the virtual tokens, or leave it null for a random start");
    }
}

internal sealed partial class PrefixTuningMethod
{
    protected override void CheckSettings(CheckContext context, PrefixTuningSpec prefix, AttributeArguments arguments) =>
        CheckEncoderHiddenSize(context, prefix.EncoderHiddenSize, arguments);
}

internal sealed partial class PTuningMethod
{
    protected override void CheckSettings(CheckContext context, PTuningSpec ptuning, AttributeArguments arguments) =>
        CheckEncoderHiddenSize(context, ptuning.EncoderHiddenSize, arguments);
}
