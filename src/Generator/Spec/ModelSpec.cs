using PeftGen.Generator.Methods;

namespace PeftGen.Generator.Spec;

/// <summary>Everything the generator knows about one annotated model class, with no Roslyn objects.</summary>
/// <param name="Namespace">The class's namespace, or null for the global namespace.</param>
/// <param name="ContainingTypes">Enclosing type declarations, outermost first.</param>
/// <param name="Type">The class's own declaration.</param>
/// <param name="FullyQualifiedName">The class as a <c>global::</c> name.</param>
/// <param name="HintName">The generated file's name, <c>Namespace.Type.g.cs</c>.</param>
/// <param name="Method">The class's PEFT method: its method attribute(s) read by the method's definition.</param>
/// <param name="Companions">The class-level attributes that go with a method: [Quantize], [LoRAPlus], [ModelConfig], ….</param>
/// <param name="Layers">Every linear layer reachable from the class, in registration (declaration) order.</param>
/// <param name="Overrides">Member-level <c>[LoRAOverride]</c> and <c>[NoLoRA]</c> settings.</param>
/// <param name="IsLlama">The class derives from the runtime's <c>LlamaForCausalLM</c>.</param>
/// <param name="HasLlamaConfigConstructor">
/// The class is a Llama model that code inside it can create as <c>new T(config)</c> from a <c>LlamaConfig</c> (what a
/// generated <c>FromPretrained</c> needs).
/// </param>
internal sealed record ModelSpec(
    string? Namespace,
    EquatableArray<TypeDeclarationSpec> ContainingTypes,
    TypeDeclarationSpec Type,
    string FullyQualifiedName,
    string HintName,
    MethodSpec Method,
    CompanionsSpec Companions,
    EquatableArray<LayerSpec> Layers,
    EquatableArray<MemberOverrideSpec> Overrides,
    bool IsLlama,
    bool HasLlamaConfigConstructor);

/// <summary>A type declaration to reopen as <c>partial</c>.</summary>
/// <param name="Keyword">"class", "struct", "record", "record struct" or "interface".</param>
/// <param name="Name">The type's name.</param>
internal sealed record TypeDeclarationSpec(string Keyword, string Name);

/// <summary>A value of an enum declared in the runtime, by member name (null when the value has no name).</summary>
internal readonly record struct EnumValueSpec(string TypeName, string? MemberName, long Value);

/// <summary>The class-level attributes that go with a method; null members are absent.</summary>
/// <param name="Quantize"><c>[Quantize]</c>.</param>
/// <param name="LoRAPlusRatio">The <c>[LoRAPlus]</c> ratio.</param>
/// <param name="ModelConfigPath">The <c>[ModelConfig]</c> path.</param>
/// <param name="DeltaLoRA"><c>[DeltaLoRA]</c>.</param>
/// <param name="LayerDrop"><c>[LayerDrop]</c>.</param>
/// <param name="LayerwiseDecay">The <c>[LayerwiseLearningRate]</c> decay.</param>
internal sealed record CompanionsSpec(
    QuantizeSpec? Quantize = null,
    double? LoRAPlusRatio = null,
    string? ModelConfigPath = null,
    DeltaLoRASpec? DeltaLoRA = null,
    LayerDropSpec? LayerDrop = null,
    double? LayerwiseDecay = null);

/// <summary>The <c>[Quantize]</c> settings.</summary>
internal sealed record QuantizeSpec(EnumValueSpec Type, bool DoubleQuant, int BlockSize, EnumValueSpec ComputeType);

/// <summary><c>[DeltaLoRA]</c>.</summary>
internal sealed record DeltaLoRASpec(int StartStep, double UpdateRatio);

/// <summary><c>[LayerDrop]</c>.</summary>
internal sealed record LayerDropSpec(double Probability, EnumValueSpec Schedule, EquatableArray<int>? Layers, int Seed);

/// <summary>How the targets text reads under the runtime's <c>TargetModules.Parse</c> rules.</summary>
internal enum TargetKind
{
    List,
    Regex,
    AllLinear,

    /// <summary>Text the runtime rejects (an empty list); emitted as <c>Parse(text)</c> so the runtime reports it.</summary>
    Invalid,
}

/// <summary>The parsed targets: the names of a list, or the text of a regex.</summary>
internal sealed record TargetSpec(TargetKind Kind, string Text, EquatableArray<string> Names);

/// <summary>Where a size comes from when it is not a constant: a field of the model's config.json.</summary>
internal enum ConfigDimension
{
    None,
    HiddenSize,
    IntermediateSize,

    /// <summary>num_attention_heads · head_dim.</summary>
    QueryWidth,

    /// <summary>num_key_value_heads · head_dim.</summary>
    KeyValueWidth,
    VocabSize,
    NumHiddenLayers,
}

/// <summary>A size: a compile-time constant (Value ≥ 1), a config.json field, or unknown (neither).</summary>
internal readonly record struct DimensionSpec(int Value, ConfigDimension FromConfig)
{
    public static DimensionSpec Unknown => default;

    public static DimensionSpec Constant(int value) => new(value, ConfigDimension.None);

    public static DimensionSpec Config(ConfigDimension field) => new(0, field);
}

/// <summary>When a layer exists.</summary>
internal enum LayerPresence
{
    Always,

    /// <summary>Only when config.json's tie_word_embeddings is false (the output head).</summary>
    UnlessTiedEmbeddings,
}

/// <summary>A linear layer found by walking the module graph.</summary>
/// <param name="Path">PyTorch-style path with "{i}" for each module-list index, e.g. model.layers.{i}.self_attn.q_proj.</param>
/// <param name="ListCounts">The length of each module list on the path, in order.</param>
/// <param name="InFeatures">Input size.</param>
/// <param name="OutFeatures">Output size.</param>
/// <param name="IsFloatLinear">The layer is a float <c>Linear</c>, which QLoRA stores in 4 bits.</param>
/// <param name="Presence">When the layer exists.</param>
/// <param name="Access">
/// A C# expression that reads the layer's member from <c>this</c> through typed members, with "{i}" for each
/// module-list index (e.g. <c>this.Model.Layers[{i}].SelfAttn.QProj</c>; <c>?.</c> after members that may be null),
/// or null when a member on the way cannot be read from the annotated class.
/// </param>
/// <param name="ListCountAccesses">
/// For each module list on the path, a C# expression of its length with "{i}" for the enclosing indices
/// (<c>this.Model.Layers.Count</c>), or "" when the list cannot be read from the annotated class.
/// </param>
internal sealed record LayerSpec(
    string Path,
    EquatableArray<DimensionSpec> ListCounts,
    DimensionSpec InFeatures,
    DimensionSpec OutFeatures,
    bool IsFloatLinear,
    LayerPresence Presence,
    string? Access = null,
    EquatableArray<string> ListCountAccesses = default);

/// <summary>A <c>[LoRAOverride]</c> or <c>[NoLoRA]</c> on the member at <paramref name="Path"/> (a layer or a submodule).</summary>
/// <param name="Path">The member's path template.</param>
/// <param name="Exclude">True for <c>[NoLoRA]</c>.</param>
/// <param name="Rank">The rank override, 0 for none.</param>
/// <param name="Alpha">The alpha override, 0 for none.</param>
/// <param name="Adapter">The adapter it applies to, or null for all.</param>
internal sealed record MemberOverrideSpec(string Path, bool Exclude, int Rank, double Alpha, string? Adapter)
{
    /// <summary>A <c>[LoRAOverride]</c> that sets neither a rank nor an alpha, and so changes nothing.</summary>
    public bool ChangesNothing => !Exclude && Rank <= 0 && !(Alpha > 0);
}

/// <summary>The shape fields of a Hugging Face config.json passed as an additional file.</summary>
internal sealed record ModelConfigSpec(
    string Path,
    int? HiddenSize,
    int? IntermediateSize,
    int? NumAttentionHeads,
    int? NumKeyValueHeads,
    int? NumHiddenLayers,
    int? VocabSize,
    int? HeadDim,
    bool TieWordEmbeddings,
    int? MaxPositionEmbeddings = null);
