using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary>A prompt-learning attribute: n virtual tokens produced by a trainable encoder.</summary>
internal abstract record PromptLearningSpec(int VirtualTokens, int Seed) : MethodSpec;

/// <summary><c>[PromptTuning]</c>; <paramref name="InitText"/> null starts the virtual tokens at random.</summary>
internal sealed record PromptTuningSpec(int VirtualTokens, string? InitText, int Seed) : PromptLearningSpec(VirtualTokens, Seed)
{
    public override MethodDefinition Definition => PromptTuningMethod.Instance;
}

/// <summary><c>[PrefixTuning]</c>; <paramref name="EncoderHiddenSize"/> 0 for the method's default.</summary>
internal sealed record PrefixTuningSpec(int VirtualTokens, bool Projection, int EncoderHiddenSize, int Seed) : PromptLearningSpec(VirtualTokens, Seed)
{
    public override MethodDefinition Definition => PrefixTuningMethod.Instance;
}

/// <summary><c>[PTuning]</c>; <paramref name="EncoderHiddenSize"/> 0 for the method's default.</summary>
internal sealed record PTuningSpec(int VirtualTokens, int EncoderHiddenSize, EnumValueSpec EncoderType, int Seed) : PromptLearningSpec(VirtualTokens, Seed)
{
    public override MethodDefinition Definition => PTuningMethod.Instance;
}

/// <summary>
/// The prompt-learning methods: the frozen Llama model gets n virtual tokens whose encoder trains. They adapt no layer,
/// so their plan is the parameter count, known where the model is a Llama with a config.
/// </summary>
/// <param name="name">The attribute's name.</param>
/// <param name="description">The method in prose: "prompt tuning".</param>
/// <param name="configType">The runtime's config type, a <c>global::</c> name.</param>
internal abstract partial class PromptLearningMethod<TSpec>(string name, string description, string configType)
    : MethodDefinition<TSpec, CountPlan>(name, Companion.None)
    where TSpec : PromptLearningSpec
{
    /// <summary>The method in prose: "prompt tuning".</summary>
    public string Description { get; } = description;

    /// <summary>The runtime's config type, a <c>global::</c> name.</summary>
    public string ConfigType { get; } = configType;

    protected sealed override CountPlan Plan(TSpec prompt, PlanContext context)
    {
        if (!context.Model.IsLlama
            || context.Resolve(ConfigDimension.HiddenSize) is not int hidden
            || context.Resolve(ConfigDimension.KeyValueWidth) is not int kvDim
            || context.Resolve(ConfigDimension.NumHiddenLayers) is not int layers
            || prompt.VirtualTokens < 1)
            return new CountPlan(null);
        return new CountPlan(Count(prompt, prompt.VirtualTokens, hidden, kvDim, layers));
    }

    /// <summary>The parameters the encoder of <paramref name="n"/> virtual tokens trains.</summary>
    protected abstract long Count(TSpec prompt, long n, long hidden, long kvDim, long layers);
}

/// <summary>Prompt tuning: n trainable virtual-token embeddings.</summary>
internal sealed partial class PromptTuningMethod() : PromptLearningMethod<PromptTuningSpec>("PromptTuning", "prompt tuning", "global::PeftGen.Methods.PromptLearning.PromptTuningConfig")
{
    public static readonly PromptTuningMethod Instance = new();

    protected override PromptTuningSpec Read(AttributeValues v) => new(v.Int("VirtualTokens"), v.String("InitText"), v.Int("Seed"));

    // The embedding [n, hidden].
    protected override long Count(PromptTuningSpec prompt, long n, long hidden, long kvDim, long layers) => n * hidden;
}

/// <summary>Prefix tuning: trainable per-layer key/value prefixes, optionally from a reparameterisation MLP.</summary>
internal sealed partial class PrefixTuningMethod() : PromptLearningMethod<PrefixTuningSpec>("PrefixTuning", "prefix tuning", "global::PeftGen.Methods.PromptLearning.PrefixTuningConfig")
{
    public static readonly PrefixTuningMethod Instance = new();

    protected override PrefixTuningSpec Read(AttributeValues v) =>
        new(v.Int("VirtualTokens"), v.Bool("Projection", false), v.Int("EncoderHiddenSize"), v.Int("Seed"));

    // The table [n, layers · 2 · kv_dim]; with the projection, the embedding [n, kv_dim] and the MLP.
    protected override long Count(PrefixTuningSpec prefix, long n, long hidden, long kvDim, long layers)
    {
        long output = layers * 2 * kvDim;
        if (!prefix.Projection) return n * output;
        long h = prefix.EncoderHiddenSize > 0 ? prefix.EncoderHiddenSize : kvDim;
        return n * kvDim + (kvDim * h + h) + (h * output + output);
    }
}

/// <summary>P-tuning: virtual tokens produced by a small trainable encoder (MLP or LSTM).</summary>
internal sealed partial class PTuningMethod() : PromptLearningMethod<PTuningSpec>("PTuning", "P-tuning", "global::PeftGen.Methods.PromptLearning.PTuningConfig")
{
    public static readonly PTuningMethod Instance = new();

    protected override PTuningSpec Read(AttributeValues v) =>
        new(v.Int("VirtualTokens"), v.Int("EncoderHiddenSize"), v.Enum("EncoderType", "PeftGen.Methods.PromptLearning.PromptEncoderType", 0), v.Int("Seed"));

    // The embedding [n, hidden] and the encoder MLP.
    protected override long Count(PTuningSpec ptuning, long n, long hidden, long kvDim, long layers)
    {
        long h = ptuning.EncoderHiddenSize > 0 ? ptuning.EncoderHiddenSize : hidden;
        return n * hidden + (hidden * h + h) + (h * h + h) + (h * hidden + hidden);
    }
}
