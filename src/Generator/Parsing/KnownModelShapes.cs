using Microsoft.CodeAnalysis;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// Shapes of the runtime's library modules in terms of config.json. Library modules build their layers from a config
/// object at run time, so their constructor arguments are not constants; these rules mirror those constructors.
/// </summary>
internal static class KnownModelShapes
{
    /// <summary>The shape of library layer <paramref name="name"/> declared in <paramref name="declaringType"/>, if known.</summary>
    public static (DimensionSpec In, DimensionSpec Out, LayerPresence Presence)? Linear(INamedTypeSymbol declaringType, string name) =>
        !IsLlamaLibraryType(declaringType) ? null : (declaringType.Name, name) switch
        {
            ("LlamaAttention", "q_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.QueryWidth),
            ("LlamaAttention", "k_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.KeyValueWidth),
            ("LlamaAttention", "v_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.KeyValueWidth),
            ("LlamaAttention", "o_proj") => Shape(ConfigDimension.QueryWidth, ConfigDimension.HiddenSize),
            ("LlamaMlp", "gate_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.IntermediateSize),
            ("LlamaMlp", "up_proj") => Shape(ConfigDimension.HiddenSize, ConfigDimension.IntermediateSize),
            ("LlamaMlp", "down_proj") => Shape(ConfigDimension.IntermediateSize, ConfigDimension.HiddenSize),
            ("LlamaForCausalLM", "lm_head") => Shape(ConfigDimension.HiddenSize, ConfigDimension.VocabSize, LayerPresence.UnlessTiedEmbeddings),
            _ => null,
        };

    /// <summary>The length of library module list <paramref name="name"/> declared in <paramref name="declaringType"/>.</summary>
    public static DimensionSpec ListCount(INamedTypeSymbol declaringType, string name) =>
        !IsLlamaLibraryType(declaringType) ? DimensionSpec.Unknown : (declaringType.Name, name) switch
        {
            ("LlamaModel", "layers") => DimensionSpec.Config(ConfigDimension.NumHiddenLayers),
            _ => DimensionSpec.Unknown,
        };

    // PeftGen.Models.Llama.*, matched name by name: display strings cost more than the rest of a walk.
    private static bool IsLlamaLibraryType(INamedTypeSymbol type) => type is
    {
        ContainingType: null,
        ContainingNamespace:
        {
            Name: "Llama",
            ContainingNamespace: { Name: "Models", ContainingNamespace: { Name: "PeftGen", ContainingNamespace.IsGlobalNamespace: true } },
        },
    };

    private static (DimensionSpec, DimensionSpec, LayerPresence) Shape(ConfigDimension inFeatures, ConfigDimension outFeatures, LayerPresence presence = LayerPresence.Always) =>
        (DimensionSpec.Config(inFeatures), DimensionSpec.Config(outFeatures), presence);
}
