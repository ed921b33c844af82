using System.Text.Json;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Adapters;

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

    private const string KeyPrefix = "base_model.model.";
    private const long MaxConfigBytes = 16 << 20;

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

        Directory.CreateDirectory(folder);
        string weightsPath = Path.Combine(folder, PeftAdapterFile.WeightsFileName), configPath = Path.Combine(folder, PeftAdapterFile.ConfigFileName);
        string weightsTemp = AtomicFile.TempPathFor(weightsPath), configTemp = AtomicFile.TempPathFor(configPath);
        try
        {
            Safetensors.Save(weightsTemp, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            AtomicFile.WriteAllBytes(configTemp, ConfigJson(bottleneck.Config, hidden, bottleneck.BottleneckSize, baseModelNameOrPath));
            File.Move(weightsTemp, weightsPath, overwrite: true);
            File.Move(configTemp, configPath, overwrite: true);
        }
        catch
        {
            AtomicFile.TryDelete(weightsTemp);
            AtomicFile.TryDelete(configTemp);
            throw;
        }
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
        string configPath = Path.Combine(folder, PeftAdapterFile.ConfigFileName);
        var (config, hidden) = ReadConfigWithHiddenSize(configPath);
        string weightsPath = Path.Combine(folder, PeftAdapterFile.WeightsFileName);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"No {PeftAdapterFile.WeightsFileName} in {folder}.", weightsPath);
        using var file = SafetensorsFile.Open(weightsPath);

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
        foreach (var key in file.TensorNames)
        {
            var info = file.GetInfo(key);
            if (!expected.TryGetValue(key, out var shape)) problems.Add($"key '{key}' {ShapeUtil.Format(info.Shape)} matches no adapter the config places");
            else if (!info.Shape.AsSpan().SequenceEqual(shape)) problems.Add($"key '{key}': expected {ShapeUtil.Format(shape)}, found {ShapeUtil.Format(info.Shape)}");
            else if (info.DType == null) problems.Add($"key '{key}' is stored as {info.DTypeName}; adapter weights must be F32, BF16 or F16");
        }
        foreach (var (key, shape) in expected)
            if (!file.Contains(key)) problems.Add($"key '{key}' {ShapeUtil.Format(shape)} is missing");
        if (problems.Count > 0)
            throw new InvalidDataException($"{weightsPath} does not fit the model ({problems.Count} mismatches): {string.Join("; ", problems)}.");

        BottleneckModel<TModel> result;
        try
        {
            result = BottleneckModel.Create(model, config);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{configPath}: {e.Message}", e);
        }
        foreach (var (path, adapter) in result.Adapters)
            foreach (var (name, tensor) in adapter.NamedParameters())
                file.ReadInto(KeyPrefix + path + "." + name, tensor);
        return result;
    }

    /// <summary>Reads <c>adapter_config.json</c> of a bottleneck adapter into a <see cref="BottleneckConfig"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid bottleneck config; the message names the key.</exception>
    public static BottleneckConfig ReadConfig(string path) => ReadConfigWithHiddenSize(path).Config;

    private static (BottleneckConfig Config, int HiddenSize) ReadConfigWithHiddenSize(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Bottleneck adapter config not found: {path}", path);
        long length = new FileInfo(path).Length;
        if (length > MaxConfigBytes) throw new InvalidDataException($"{path}: {length:N0} bytes is too large for an adapter config.");
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 16 });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: the config must be a JSON object, found {root.ValueKind}.");
            string type = String(path, root, "peft_type") ?? throw new InvalidDataException($"{path}: \"peft_type\" is missing; expected \"{PeftType}\".");
            if (type != PeftType) throw new InvalidDataException($"{path}: peft_type \"{type}\" is not a bottleneck adapter (\"{PeftType}\"); LoRA folders load with PeftAdapterFile.");
            int hidden = Int(path, root, "hidden_size") ?? throw new InvalidDataException($"{path}: \"hidden_size\" is missing.");
            var config = new BottleneckConfig
            {
                BottleneckSize = Int(path, root, "bottleneck_size") ?? throw new InvalidDataException($"{path}: \"bottleneck_size\" is missing."),
                ReductionFactor = Int(path, root, "reduction_factor") ?? 16,
                Activation = (String(path, root, "non_linearity") ?? "relu") switch
                {
                    "relu" => BottleneckActivation.Relu,
                    "gelu" => BottleneckActivation.Gelu,
                    "silu" or "swish" => BottleneckActivation.Silu,
                    var other => throw new InvalidDataException($"{path}: non_linearity \"{other}\" is not one of \"relu\", \"gelu\", \"silu\"."),
                },
                Placement = (String(path, root, "placement") ?? "both") switch
                {
                    "attention" => BottleneckPlacement.Attention,
                    "mlp" => BottleneckPlacement.Mlp,
                    "both" => BottleneckPlacement.Both,
                    var other => throw new InvalidDataException($"{path}: placement \"{other}\" is not one of \"attention\", \"mlp\", \"both\"."),
                },
                Bias = Bool(path, root, "bias") ?? true,
                Layers = Layers(path, root),
            };
            config.Validate();
            return (config, hidden);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
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

    private static byte[] ConfigJson(BottleneckConfig config, int hidden, int size, string? baseModel)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("peft_type", PeftType);
            w.WriteString("task_type", "CAUSAL_LM");
            if (baseModel == null) w.WriteNull("base_model_name_or_path");
            else w.WriteString("base_model_name_or_path", baseModel);
            w.WriteNumber("hidden_size", hidden);
            w.WriteNumber("bottleneck_size", size);
            w.WriteNumber("reduction_factor", config.ReductionFactor);
            w.WriteString("non_linearity", config.Activation switch { BottleneckActivation.Gelu => "gelu", BottleneckActivation.Silu => "silu", _ => "relu" });
            w.WriteString("placement", config.Placement switch { BottleneckPlacement.Attention => "attention", BottleneckPlacement.Mlp => "mlp", _ => "both" });
            w.WriteBoolean("bias", config.Bias);
            w.WritePropertyName("layers_to_transform");
            if (config.Layers == null) w.WriteNullValue();
            else
            {
                w.WriteStartArray();
                foreach (int i in config.Layers) w.WriteNumberValue(i);
                w.WriteEndArray();
            }
            w.WriteBoolean("inference_mode", true);
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    private static IReadOnlyList<int>? Layers(string path, JsonElement root)
    {
        if (!root.TryGetProperty("layers_to_transform", out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: layers_to_transform must be null or a list of integers, found {value.ValueKind}.");
        return value.EnumerateArray().Select(v => v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
            : throw new InvalidDataException($"{path}: layers_to_transform must hold integers, found {v}.")).ToList();
    }

    private static string? String(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : throw new InvalidDataException($"{path}: {key} must be a string, found {v.ValueKind}.");

    private static bool? Bool(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
        : throw new InvalidDataException($"{path}: {key} must be true or false, found {v.ValueKind}.");

    private static int? Int(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
        : throw new InvalidDataException($"{path}: {key} must be an integer, found {v}.");
}
