using System.Text.Json;
using System.Text.Json.Serialization;

namespace PeftGen.Models.Llama;

/// <summary>
/// Shape and numerics of a Llama-family model. Property names mirror Hugging Face's <c>config.json</c>
/// (hidden_size, num_key_value_heads, …), so a config file reads straight into this record.
/// </summary>
/// <remarks>
/// The JSON-mapped properties have setters rather than <c>init</c>: the System.Text.Json source generator sets
/// init-only properties through one object initializer, which would replace the defaults of keys a config.json
/// omits (rope_theta, rms_norm_eps, …) with zero.
/// </remarks>
public sealed record LlamaConfig
{
    /// <summary>Model width (hidden_size).</summary>
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; } = 4096;

    /// <summary>MLP width (intermediate_size).</summary>
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; set; } = 11008;

    /// <summary>Decoder layers (num_hidden_layers).</summary>
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; } = 32;

    /// <summary>Query heads (num_attention_heads).</summary>
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; } = 32;

    /// <summary>Key/value heads for grouped-query attention (num_key_value_heads; defaults to the query heads).</summary>
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; set; }

    /// <summary>Vocabulary size.</summary>
    [JsonPropertyName("vocab_size")] public int VocabSize { get; set; } = 32000;

    /// <summary>RMSNorm ε.</summary>
    [JsonPropertyName("rms_norm_eps")] public float RmsNormEps { get; set; } = 1e-6f;

    /// <summary>RoPE base θ.</summary>
    [JsonPropertyName("rope_theta")] public float RopeTheta { get; set; } = 10000f;

    /// <summary>Longest sequence the model was trained for.</summary>
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; set; } = 2048;

    /// <summary>Whether the output head shares the token embedding.</summary>
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; set; }

    /// <summary>Per-head width; defaults to hidden_size / num_attention_heads.</summary>
    [JsonPropertyName("head_dim")] public int? HeadDimOverride { get; set; }

    /// <summary>Storage dtype of the checkpoint ("float32", "bfloat16", "float16").</summary>
    [JsonPropertyName("torch_dtype")] public string? TorchDtype { get; set; }

    /// <summary>Architecture name, "LlamaForCausalLM" for this family.</summary>
    [JsonPropertyName("model_type")] public string ModelType { get; set; } = "llama";

    /// <summary>Beginning-of-sequence token id.</summary>
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; set; }

    /// <summary>End-of-sequence token id.</summary>
    [JsonPropertyName("eos_token_id")] public int? EosTokenId { get; set; }

    /// <summary>
    /// RoPE pairing convention: true rotates interleaved pairs (Meta and llama2.c checkpoints), false rotates
    /// halves (Hugging Face checkpoints, whose q/k rows are permuted to match). Not part of config.json.
    /// </summary>
    [JsonIgnore] public bool RopeInterleaved { get; init; }

    /// <summary>Key/value heads after applying the default.</summary>
    [JsonIgnore] public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;

    /// <summary>Per-head width after applying the default.</summary>
    [JsonIgnore] public int HeadDim => HeadDimOverride ?? HiddenSize / NumAttentionHeads;

    /// <summary>Throws <see cref="InvalidDataException"/> naming the first inconsistent setting.</summary>
    public void Validate(string source = "config")
    {
        void Require(bool ok, string message)
        {
            if (!ok) throw new InvalidDataException($"{source}: {message}");
        }
        Require(HiddenSize > 0, $"hidden_size must be positive (got {HiddenSize}).");
        Require(IntermediateSize > 0, $"intermediate_size must be positive (got {IntermediateSize}).");
        Require(NumHiddenLayers > 0, $"num_hidden_layers must be positive (got {NumHiddenLayers}).");
        Require(NumAttentionHeads > 0, $"num_attention_heads must be positive (got {NumAttentionHeads}).");
        Require(KeyValueHeads > 0 && NumAttentionHeads % KeyValueHeads == 0,
            $"num_attention_heads ({NumAttentionHeads}) must be a multiple of num_key_value_heads ({KeyValueHeads}).");
        Require(HeadDimOverride is null or > 0, $"head_dim must be positive (got {HeadDimOverride}).");
        Require(HeadDimOverride != null || HiddenSize % NumAttentionHeads == 0,
            $"hidden_size ({HiddenSize}) must be divisible by num_attention_heads ({NumAttentionHeads}).");
        Require(HeadDim % 2 == 0, $"the head size ({HeadDim}) must be even for rotary embeddings.");
        Require((long)NumAttentionHeads * HeadDim <= int.MaxValue,
            $"num_attention_heads ({NumAttentionHeads}) × head size ({HeadDim}) is too large for a weight dimension.");
        Require(VocabSize > 0, $"vocab_size must be positive (got {VocabSize}).");
        Require(float.IsFinite(RmsNormEps) && RmsNormEps > 0, $"rms_norm_eps must be a finite positive number (got {RmsNormEps}).");
        Require(float.IsFinite(RopeTheta) && RopeTheta > 0, $"rope_theta must be a finite positive number (got {RopeTheta}).");
        Require(MaxPositionEmbeddings > 0, $"max_position_embeddings must be positive (got {MaxPositionEmbeddings}).");
    }

    /// <summary>Reads a Hugging Face <c>config.json</c>.</summary>
    public static LlamaConfig Load(string path)
    {
        LlamaConfig? config;
        try
        {
            config = JsonSerializer.Deserialize(File.ReadAllText(path), LlamaJsonContext.Default.LlamaConfig);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a valid config.json ({e.Message}).", e);
        }
        if (config == null) throw new InvalidDataException($"{path}: config.json is empty (null).");
        config.Validate(path);
        return config;
    }

    /// <summary>Serialises to Hugging Face <c>config.json</c> text.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, LlamaJsonContext.Default.LlamaConfig);

    /// <summary>The shape of llama2.c's stories15M (the benchmark model).</summary>
    public static LlamaConfig Stories15M => new()
    {
        HiddenSize = 288, IntermediateSize = 768, NumHiddenLayers = 6, NumAttentionHeads = 6, NumKeyValueHeads = 6,
        VocabSize = 32000, RmsNormEps = 1e-5f, RopeTheta = 10000f, MaxPositionEmbeddings = 256, TieWordEmbeddings = true,
        RopeInterleaved = true,
    };
}

[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    NumberHandling = JsonNumberHandling.AllowReadingFromString)]
[JsonSerializable(typeof(LlamaConfig))]
internal sealed partial class LlamaJsonContext : JsonSerializerContext;
