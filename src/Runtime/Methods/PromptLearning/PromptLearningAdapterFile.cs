using System.Text.Json;
using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.Methods.PromptLearning;

/// <summary>
/// Prompt-learning adapters (PROMPT_TUNING, P_TUNING, PREFIX_TUNING) in Hugging Face PEFT's folder format.
/// <c>adapter_model.safetensors</c> holds one tensor, <c>prompt_embeddings</c>: the encoder's output, [n, token_dim] for
/// prompt tuning and P-tuning, [n, num_layers · 2 · token_dim] for prefix tuning (the MLP of P-tuning and of projected
/// prefix tuning is not saved, exactly as PEFT does). <c>adapter_config.json</c> records num_virtual_tokens, token_dim,
/// num_transformer_submodules (1), num_attention_heads, num_layers and the method's own keys; for prefix tuning of a
/// grouped-query model token_dim and num_attention_heads are the key/value width and heads, as PEFT adjusts them.
/// A loaded adapter is PEFT's inference mode: the table is used as is and stays frozen.
/// </summary>
public static class PromptLearningAdapterFile
{
    /// <summary>The one tensor of a prompt-learning adapter file.</summary>
    public const string EmbeddingsKey = "prompt_embeddings";

    /// <summary>Writes adapter <paramref name="adapter"/> of <paramref name="peft"/> to <paramref name="folder"/> (atomically, both files renamed into place).</summary>
    public static void Save(PromptLearningModel peft, string folder, string adapter = "default", string? baseModelNameOrPath = null)
    {
        ArgumentNullException.ThrowIfNull(peft);
        ArgumentNullException.ThrowIfNull(folder);
        var config = peft.GetConfig(adapter);
        var shape = ModelShape.Of(peft.Model.Config, config);
        using var embeddings = peft.PromptEmbeddings(adapter);                                // [n, token_dim] or [n, layers · 2 · token_dim]
        var json = AdapterConfigJson.Build(w =>
        {
            AdapterConfigJson.WriteHeader(w, config.PeftType, baseModelNameOrPath);
            w.WriteNull("revision");
            w.WriteBoolean("inference_mode", true);
            w.WriteNumber("num_virtual_tokens", config.NumVirtualTokens);
            w.WriteNumber("token_dim", shape.TokenDim);
            w.WriteNumber("num_transformer_submodules", 1);
            w.WriteNumber("num_attention_heads", shape.Heads);
            w.WriteNumber("num_layers", shape.Layers);
            w.WriteNull("modules_to_save");
            switch (config)
            {
                case PromptTuningConfig prompt:
                    w.WriteString("prompt_tuning_init", prompt.Init == PromptTuningInit.Text ? "TEXT" : "RANDOM");
                    if (prompt.InitText == null) w.WriteNull("prompt_tuning_init_text");
                    else w.WriteString("prompt_tuning_init_text", prompt.InitText);
                    w.WriteNull("tokenizer_name_or_path");
                    w.WriteNull("tokenizer_kwargs");
                    break;
                case PrefixTuningConfig prefix:
                    w.WriteNumber("encoder_hidden_size", prefix.EncoderHiddenSize ?? shape.TokenDim);
                    w.WriteBoolean("prefix_projection", prefix.PrefixProjection);
                    break;
                case PTuningConfig ptuning:
                    w.WriteString("encoder_reparameterization_type", ptuning.EncoderType == PromptEncoderType.Lstm ? "LSTM" : "MLP");
                    w.WriteNumber("encoder_hidden_size", ptuning.EncoderHiddenSize ?? shape.TokenDim);
                    w.WriteNumber("encoder_num_layers", 2);
                    w.WriteNumber("encoder_dropout", 0.0);
                    break;
            }
        });
        AdapterFolder.Write(folder, [(EmbeddingsKey, embeddings)], json, RopeOrder.Of(peft.Model), KeyColumns(config));
    }

    /// <summary>
    /// Plugs the adapter in <paramref name="folder"/> into <paramref name="model"/> and returns the prompt-learning model,
    /// the adapter active and frozen (PEFT's inference mode). The model is left untouched when the folder does not fit it.
    /// </summary>
    /// <exception cref="InvalidDataException">The config is invalid or describes another model, or the tensor is missing or misshapen.</exception>
    public static PromptLearningModel LoadInto(LlamaForCausalLM model, string folder, string adapterName = "default")
    {
        ArgumentNullException.ThrowIfNull(model);
        PromptLearningModel? peft = null;
        LoadCore(model, folder, adapterName, config => peft = PromptLearningModel.Create(model, config, null, adapterName, loaded: true));
        return peft!;
    }

    /// <summary>Adds the adapter in <paramref name="folder"/> to <paramref name="peft"/> as <paramref name="adapterName"/> (inactive, frozen).</summary>
    /// <exception cref="InvalidDataException">The config is invalid or describes another model, or the tensor is missing or misshapen.</exception>
    public static void Load(PromptLearningModel peft, string folder, string adapterName = "default")
    {
        ArgumentNullException.ThrowIfNull(peft);
        LoadCore(peft.Model, folder, adapterName, config => peft.AddAdapter(adapterName, config, null, loaded: true));
    }

    /// <summary>
    /// Reads <c>adapter_config.json</c> into the method's config (<see cref="PromptTuningConfig"/>,
    /// <see cref="PrefixTuningConfig"/> or <see cref="PTuningConfig"/>).
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not a valid prompt-learning config; the message names the key.</exception>
    public static PromptLearningConfig ReadConfig(string path)
    {
        using var document = AdapterConfigJson.Open(path, "PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING");
        return ParseConfig(path, document.RootElement);
    }

    private static PromptLearningConfig ParseConfig(string path, JsonElement root)
    {
        int n = AdapterConfigJson.GetInt(path, root, "num_virtual_tokens")
            ?? throw new InvalidDataException($"{path}: num_virtual_tokens is missing.");
        PromptLearningConfig config = AdapterConfigJson.GetString(path, root, "peft_type") switch
        {
            "PROMPT_TUNING" => new PromptTuningConfig
            {
                NumVirtualTokens = n,
                Init = (AdapterConfigJson.GetString(path, root, "prompt_tuning_init") ?? "RANDOM") switch
                {
                    "TEXT" => PromptTuningInit.Text,
                    "RANDOM" or "SAMPLE_VOCAB" => PromptTuningInit.Random, // how it started no longer matters once trained
                    var other => throw new InvalidDataException($"{path}: prompt_tuning_init \"{other}\" is not one of \"RANDOM\", \"TEXT\"."),
                },
                InitText = AdapterConfigJson.GetString(path, root, "prompt_tuning_init_text"),
            },
            "PREFIX_TUNING" => new PrefixTuningConfig
            {
                NumVirtualTokens = n,
                PrefixProjection = AdapterConfigJson.GetBool(path, root, "prefix_projection") ?? false,
                EncoderHiddenSize = AdapterConfigJson.GetInt(path, root, "encoder_hidden_size"),
            },
            _ => new PTuningConfig
            {
                NumVirtualTokens = n,
                EncoderHiddenSize = AdapterConfigJson.GetInt(path, root, "encoder_hidden_size"),
                EncoderType = (AdapterConfigJson.GetString(path, root, "encoder_reparameterization_type") ?? "MLP") switch
                {
                    "MLP" => PromptEncoderType.Mlp,
                    "LSTM" => PromptEncoderType.Lstm,
                    var other => throw new InvalidDataException($"{path}: encoder_reparameterization_type \"{other}\" is not one of \"MLP\", \"LSTM\"."),
                },
            },
        };
        try
        {
            config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
        return config;
    }

    private static void LoadCore(LlamaForCausalLM model, string folder, string adapterName, Action<PromptLearningConfig> addAdapter)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(adapterName);
        string configPath = Path.Combine(folder, AdapterFolder.ConfigFileName);
        PromptLearningConfig config;
        using (var document = AdapterConfigJson.Open(configPath, "PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"))
        {
            config = ParseConfig(configPath, document.RootElement);
            CheckModelFields(configPath, document.RootElement, ModelShape.Of(model.Config, config));
        }
        using var file = AdapterFolder.OpenWeights(folder, RopeOrder.Of(model), KeyColumns(config));
        var problems = new List<string>();
        AdapterFolder.CompareKeys(file, new Dictionary<string, int[]> { [EmbeddingsKey] = ExpectedShape(model.Config, config) }, problems,
            unmatched: $"is unexpected (a prompt-learning adapter holds only '{EmbeddingsKey}')", missingNote: "");
        AdapterFolder.ThrowIfAny(file.FilePath, problems);
        AdapterFolder.AddFromConfig(configPath, () => addAdapter(config));
        var peft = (PromptLearningModel)model.Model.PromptLearning!;
        file.ReadInto(EmbeddingsKey, peft.Encoder(adapterName).Embedding.Weight);
    }

    /// <summary>The model-derived keys must describe this model: a mismatch means the adapter was trained for another.</summary>
    private static void CheckModelFields(string path, JsonElement root, ModelShape shape)
    {
        var problems = new List<string>();
        void Check(string key, int expected, string meaning)
        {
            if (AdapterConfigJson.GetInt(path, root, key) is int found && found != expected)
                problems.Add($"{key} is {found} but the model has {expected} ({meaning})");
        }
        Check("token_dim", shape.TokenDim, shape.Prefix ? "num_key_value_heads · head_dim" : "hidden_size");
        Check("num_layers", shape.Layers, "num_hidden_layers");
        Check("num_attention_heads", shape.Heads, shape.Prefix ? "num_key_value_heads" : "num_attention_heads");
        if (AdapterConfigJson.GetInt(path, root, "num_transformer_submodules") is int submodules && submodules != 1)
            problems.Add($"num_transformer_submodules is {submodules}; a decoder-only model has 1 (2 is for encoder-decoder models)");
        if (problems.Count > 0)
            throw new InvalidDataException($"{path} was made for another model: {string.Join("; ", problems)}.");
    }

    /// <summary>
    /// Prefix tuning's keys are rotated keys, in the model's q/k feature order: they are stored in Hugging Face's order
    /// (reordered for interleaved RoPE). Prompt tuning and P-tuning tables are input embeddings, which keep theirs.
    /// </summary>
    private static AdapterFolder.Reordering? KeyColumns(PromptLearningConfig config) =>
        config is PrefixTuningConfig ? (rope, key, shape) => key == EmbeddingsKey ? rope.PrefixKeys(shape) : null : null;

    private static int[] ExpectedShape(LlamaConfig model, PromptLearningConfig config)
    {
        var shape = ModelShape.Of(model, config);
        return [config.NumVirtualTokens, shape.Prefix ? shape.Layers * 2 * shape.TokenDim : shape.TokenDim];
    }

    /// <summary>PEFT's model-derived fields: token_dim and num_attention_heads become the key/value width and heads for prefix tuning.</summary>
    private sealed record ModelShape(int TokenDim, int Heads, int Layers, bool Prefix)
    {
        public static ModelShape Of(LlamaConfig c, PromptLearningConfig config) => config is PrefixTuningConfig
            ? new(c.KeyValueHeads * c.HeadDim, c.KeyValueHeads, c.NumHiddenLayers, true)
            : new(c.HiddenSize, c.NumAttentionHeads, c.NumHiddenLayers, false);
    }
}
