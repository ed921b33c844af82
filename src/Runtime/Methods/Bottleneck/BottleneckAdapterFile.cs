using System.Text.Json;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.Bottleneck;

/// <summary>
/// Bottleneck adapter folders, in the spirit of PEFT's (PEFT itself has no bottleneck adapter type, so this format is
/// PeftGen's own): <c>adapter_config.json</c> with <c>"peft_type": "BOTTLENECK"</c> and
/// <c>adapter_model.safetensors</c> (metadata <c>{"format": "pt"}</c>) holding, per adapted sublayer,
/// <c>base_model.model.&lt;layer&gt;.{attn,mlp}_adapter.adapter_down.weight</c> [m, d], <c>.adapter_down.bias</c> [m],
/// <c>.adapter_up.weight</c> [d, m] and <c>.adapter_up.bias</c> [d] (biases only when the config says so).
/// </summary>
public static class BottleneckAdapterFile
{
    /// <summary>The <c>peft_type</c> this format writes (a PeftGen extension; Python PEFT does not know it).</summary>
    public const string PeftType = "BOTTLENECK";

    private const string KeyPrefix = AdapterFolder.KeyPrefix;

    /// <summary>
    /// Writes the adapters of <paramref name="bottleneck"/> to <paramref name="folder"/> (created when missing). Both
    /// files are written in full under temporary names, then renamed into place.
    /// </summary>
    public static void Save<TModel>(BottleneckModel<TModel> bottleneck, string folder, string? baseModelNameOrPath = null) where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(bottleneck);
        ArgumentNullException.ThrowIfNull(folder);
        var adapters = bottleneck.Adapters.ToList();
        var tensors = new List<(string, Tensor)>();
        foreach (var (path, adapter) in adapters)
            foreach (var (name, tensor) in adapter.NamedParameters())
                tensors.Add((KeyPrefix + path + "." + name, tensor));
        int hidden = adapters.Count > 0 ? adapters[0].Adapter.HiddenSize : 0;

        AdapterFolder.Write(folder, tensors, ConfigJson(bottleneck.Config, hidden, bottleneck.BottleneckSize, baseModelNameOrPath));
    }

    /// <summary>
    /// Adds the bottleneck adapters in <paramref name="folder"/> to <paramref name="model"/> and returns the adapted
    /// model (base frozen, adapters trainable). The model is left untouched when the folder does not fit it.
    /// </summary>
    /// <exception cref="InvalidDataException">The config is invalid, or keys and adapters disagree; every mismatch is listed.</exception>
    /// <exception cref="SafetensorsFormatException">The weights file breaks the safetensors format.</exception>
    public static BottleneckModel<TModel> LoadInto<TModel>(TModel model, string folder) where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(folder);
        string configPath = Path.Combine(folder, AdapterFolder.ConfigFileName);
        var (config, hidden) = ReadConfigWithHiddenSize(configPath);
        using var file = AdapterFolder.OpenWeights(folder);

        // Check everything before the model changes.
        var layers = BottleneckModel<TModel>.DecoderLayers(model);
        int modelHidden = layers.Count > 0 ? layers[0].Layer.InputLayerNorm.Weight.Size(0) : 0;
        if (hidden != modelHidden)
            throw new InvalidDataException($"{configPath}: hidden_size {hidden} does not match the model's {modelHidden}.");
        int size;
        try
        {
            size = config.SizeFor(modelHidden);
            foreach (int index in config.Layers ?? [])
                if (index >= layers.Count)
                    throw new ArgumentException($"layers_to_transform names layer {index}; the model has {layers.Count} decoder layers.");
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{configPath}: {e.Message}", e);
        }
        var expected = ExpectedKeys(config, layers.Select(l => l.Path).ToList(), modelHidden, size);
        var problems = new List<string>();
        AdapterFolder.CompareKeys(file, expected, problems, unmatched: "matches no adapter the config places", missingNote: "");
        AdapterFolder.ThrowIfAny(file.FilePath, problems);

        BottleneckModel<TModel>? result = null;
        AdapterFolder.AddFromConfig(configPath, () => result = BottleneckModel.Create(model, config));
        foreach (var (path, adapter) in result!.Adapters)
            foreach (var (name, tensor) in adapter.NamedParameters())
                file.ReadInto(KeyPrefix + path + "." + name, tensor);
        return result;
    }

    /// <summary>Reads <c>adapter_config.json</c> of a bottleneck adapter into a <see cref="BottleneckConfig"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid bottleneck config; the message names the key.</exception>
    public static BottleneckConfig ReadConfig(string path) => ReadConfigWithHiddenSize(path).Config;

    private static (BottleneckConfig Config, int HiddenSize) ReadConfigWithHiddenSize(string path) =>
        AdapterConfigJson.Read(path, root => ParseConfig(path, root), c => c.Config.Validate(), "Bottleneck adapter config");

    private static (BottleneckConfig Config, int HiddenSize) ParseConfig(string path, JsonElement root)
    {
        string type = AdapterConfigJson.GetString(path, root, "peft_type") ?? throw new InvalidDataException($"{path}: \"peft_type\" is missing; expected \"{PeftType}\".");
        if (type != PeftType) throw new InvalidDataException($"{path}: peft_type \"{type}\" is not a bottleneck adapter (\"{PeftType}\"); LoRA folders load with PeftAdapterFile.");
        int hidden = AdapterConfigJson.GetInt(path, root, "hidden_size") ?? throw new InvalidDataException($"{path}: \"hidden_size\" is missing.");
        var config = new BottleneckConfig
        {
            BottleneckSize = AdapterConfigJson.GetInt(path, root, "bottleneck_size") ?? throw new InvalidDataException($"{path}: \"bottleneck_size\" is missing."),
            ReductionFactor = AdapterConfigJson.GetInt(path, root, "reduction_factor") ?? 16,
            Activation = (AdapterConfigJson.GetString(path, root, "non_linearity") ?? "relu") switch
            {
                "relu" => BottleneckActivation.Relu,
                "gelu" => BottleneckActivation.Gelu,
                "silu" or "swish" => BottleneckActivation.Silu,
                var other => throw new InvalidDataException($"{path}: non_linearity \"{other}\" is not one of \"relu\", \"gelu\", \"silu\"."),
            },
            Placement = (AdapterConfigJson.GetString(path, root, "placement") ?? "both") switch
            {
                "attention" => BottleneckPlacement.Attention,
                "mlp" => BottleneckPlacement.Mlp,
                "both" => BottleneckPlacement.Both,
                var other => throw new InvalidDataException($"{path}: placement \"{other}\" is not one of \"attention\", \"mlp\", \"both\"."),
            },
            Bias = AdapterConfigJson.GetBool(path, root, "bias") ?? true,
            Layers = AdapterConfigJson.GetLayers(path, root, allowSingle: false),
        };
        return (config, hidden);
    }

    private static Dictionary<string, int[]> ExpectedKeys(BottleneckConfig config, IReadOnlyList<string> layerPaths, int hidden, int size)
    {
        var keys = new Dictionary<string, int[]>(StringComparer.Ordinal);
        for (int i = 0; i < layerPaths.Count; i++)
        {
            if (config.Layers != null && !config.Layers.Contains(i)) continue;
            foreach (var (site, on) in (ReadOnlySpan<(string, bool)>)[("attn_adapter", config.AdaptsAttention), ("mlp_adapter", config.AdaptsMlp)])
            {
                if (!on) continue;
                string prefix = KeyPrefix + layerPaths[i] + "." + site;
                keys[prefix + ".adapter_down.weight"] = [size, hidden];
                keys[prefix + ".adapter_up.weight"] = [hidden, size];
                if (!config.Bias) continue;
                keys[prefix + ".adapter_down.bias"] = [size];
                keys[prefix + ".adapter_up.bias"] = [hidden];
            }
        }
        return keys;
    }

    private static byte[] ConfigJson(BottleneckConfig config, int hidden, int size, string? baseModel) => AdapterConfigJson.Build(w =>
    {
        AdapterConfigJson.WriteHeader(w, PeftType, baseModel);
        w.WriteNumber("hidden_size", hidden);
        w.WriteNumber("bottleneck_size", size);
        w.WriteNumber("reduction_factor", config.ReductionFactor);
        w.WriteString("non_linearity", config.Activation switch { BottleneckActivation.Gelu => "gelu", BottleneckActivation.Silu => "silu", _ => "relu" });
        w.WriteString("placement", config.Placement switch { BottleneckPlacement.Attention => "attention", BottleneckPlacement.Mlp => "mlp", _ => "both" });
        w.WriteBoolean("bias", config.Bias);
        AdapterConfigJson.WriteIntsOrNull(w, "layers_to_transform", config.Layers);
        w.WriteBoolean("inference_mode", true);
    });
}
