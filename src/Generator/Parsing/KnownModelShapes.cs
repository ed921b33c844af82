using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// Shapes of the runtime's library modules in terms of config.json. Library modules build their layers from a config
/// object at run time, so their constructor arguments are not constants; these rules mirror those constructors.
/// </summary>
internal static class KnownModelShapes
{
    private const string Llama = "PeftGen.Models.Llama.";

    /// <summary>The shape of library layer <paramref name="name"/> declared in <paramref name="declaringType"/>, if known.</summary>
    public static (DimensionSpec In, DimensionSpec Out, LayerPresence Presence)? Linear(string declaringType, string name) =>
        (declaringType, name) switch
        {
            (Llama + "LlamaAttention", "q_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.QueryWidth),
            (Llama + "LlamaAttention", "k_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.KeyValueWidth),
            (Llama + "LlamaAttention", "v_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.KeyValueWidth),
            (Llama + "LlamaAttention", "o_proj") => Shape(ConfigDimension.QueryWidth, ConfigDimension.HiddenSize),
            (Llama + "LlamaMlp", "gate_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.IntermediateSize),
            (Llama + "LlamaMlp", "up_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.IntermediateSize),
            (Llama + "LlamaMlp", "down_proj") => Shape(ConfigDimension.IntermediateSize, ConfigDimension.HiddenSize),
            (Llama + "LlamaForCausalLM", "lm_head") => Shape(ConfigDimension.HiddenSize, ConfigDimension.VocabSize, LayerPresence.UnlessTiedEmbeddings),
            _ => null,
        };

    /// <summary>The length of library module list <paramref name="name"/> declared in <paramref name="declaringType"/>.</summary>
    public static DimensionSpec ListCount(string declaringType, string name) =>
        (declaringType, name) switch
        {
            (Llama + "LlamaModel", "layers") => DimensionSpec.Config(ConfigDimension.NumHiddenLayers),
            _ => DimensionSpec.Unknown,
        };

    private static (DimensionSpec, DimensionSpec, LayerPresence) Shape(ConfigDimension inFeatures, ConfigDimension outFeatures, LayerPresence presence = LayerPresence.Always) =>
        (DimensionSpec.Config(inFeatures), DimensionSpec.Config(outFeatures), presence);
}
