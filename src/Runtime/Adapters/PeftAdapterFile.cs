using System.Text.Json;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Adapters;

/// <summary>
/// Hugging Face PEFT adapter folders, the interchange format of LoRA adapters: <c>adapter_config.json</c> (PEFT's
/// LoraConfig) and <c>adapter_model.safetensors</c> (metadata <c>{"format": "pt"}</c>) with keys
/// <c>base_model.model.&lt;path&gt;.lora_A.weight</c> [r, in], <c>.lora_B.weight</c> [out, r] and, for DoRA,
/// <c>.lora_magnitude_vector</c> [out] (PEFT drops the ".weight" of its magnitude module when saving). The adapter
/// name never appears in the keys, so a file loads under any name.
/// </summary>
public static class PeftAdapterFile
{
    /// <summary>Name of the adapter configuration file.</summary>
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>Name of the adapter weights file.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    private const string KeyPrefix = "base_model.model.";
    private const string SuffixA = ".lora_A.weight";
    private const string SuffixB = ".lora_B.weight";
    private const string SuffixMagnitude = ".lora_magnitude_vector";
    private const long MaxConfigBytes = 16 << 20;

    /// <summary>Writes an (IA)³ adapter in PEFT's format (see <see cref="Formats.IA3AdapterFile"/>).</summary>
    public static void Save<TModel>(IA3Model<TModel> ia3, string folder, string adapter = "default", string? baseModelNameOrPath = null)
        where TModel : Module => Formats.IA3AdapterFile.Save(ia3, folder, adapter, baseModelNameOrPath);

    /// <summary>Writes a prompt-learning adapter in PEFT's format (see <see cref="Formats.PromptLearningAdapterFile"/>).</summary>
    public static void Save(PromptLearningModel peft, string folder, string adapter = "default", string? baseModelNameOrPath = null) =>
        Formats.PromptLearningAdapterFile.Save(peft, folder, adapter, baseModelNameOrPath);

    /// <summary>
    /// Writes adapter <paramref name="adapter"/> of <paramref name="peft"/> to <paramref name="folder"/> (created when
    /// missing). Both files are first written in full under temporary names, then renamed into place.
    /// </summary>
    public static void Save<TModel>(PeftModel<TModel> peft, string folder, string adapter = "default", string? baseModelNameOrPath = null)
        where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(peft);
        ArgumentNullException.ThrowIfNull(folder);
        var config = peft.GetConfig(adapter);
        var layers = peft.LoRALayers.Where(l => l.Layer.AdapterNames.Contains(adapter)).ToList();
        var tensors = new List<(string, Tensor)>();
        foreach (var (path, layer) in layers)
        {
            tensors.Add((KeyPrefix + path + SuffixA, layer.LoraA(adapter)));
            tensors.Add((KeyPrefix + path + SuffixB, layer.LoraB(adapter)));
            if (layer.Magnitude(adapter) is { } magnitude) tensors.Add((KeyPrefix + path + SuffixMagnitude, magnitude));
        }
        WriteFolder(peft.Model, config, tensors, layers.Select(l => l.Path), folder, baseModelNameOrPath);
    }

    /// <summary>
    /// Writes an adapter folder from the adapter's tensors given by file key (<c>base_model.model.&lt;path&gt;.lora_A.weight</c>
    /// [r, in], <c>.lora_B.weight</c> [out, r], <c>.lora_magnitude_vector</c> [out]), as generated <c>SaveAdapter</c>
    /// methods list them from typed members; the biases <paramref name="config"/>'s bias mode saves come from
    /// <paramref name="model"/>. Written like <see cref="Save{TModel}(PeftModel{TModel}, string, string, string?)"/>: in full under temporary names, then renamed.
    /// </summary>
    public static void Save(Module model, LoRAConfig config, IReadOnlyList<(string Key, Tensor Tensor)> adapterTensors, string folder, string? baseModelNameOrPath = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(adapterTensors);
        ArgumentNullException.ThrowIfNull(folder);
        foreach (var (key, _) in adapterTensors)
            if (!key.StartsWith(KeyPrefix, StringComparison.Ordinal))
                throw new ArgumentException($"Adapter key '{key}' does not start with '{KeyPrefix}', as PEFT file keys do.", nameof(adapterTensors));
        var adaptedPaths = adapterTensors.Select(t => t.Key).Where(k => k.EndsWith(SuffixA, StringComparison.Ordinal))
            .Select(k => k[KeyPrefix.Length..^SuffixA.Length]);
        WriteFolder(model, config, [.. adapterTensors], adaptedPaths, folder, baseModelNameOrPath);
    }

    /// <summary>
    /// Opens <c>adapter_model.safetensors</c> in <paramref name="folder"/> for a generated <c>LoadAdapter</c> and checks it
    /// against <paramref name="expected"/> (file key → shape of every adapter tensor the model needs for the folder's
    /// config) exactly as <see cref="Load{TModel}"/> does, before the model changes. The caller disposes the file.
    /// </summary>
    /// <exception cref="InvalidDataException">Keys and layers disagree; every mismatch is listed.</exception>
    public static SafetensorsFile OpenWeights(Module model, string folder, IReadOnlyDictionary<string, int[]> expected)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(expected);
        string weightsPath = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"No {WeightsFileName} in {folder}.", weightsPath);
        var file = SafetensorsFile.Open(weightsPath);
        try
        {
            CheckKeys(model, expected, file);
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Copies the biases saved in <paramref name="weights"/> (bias modes "all" and "lora_only") into the parameters of <paramref name="model"/> at the same paths.</summary>
    public static void ReadBiases(Module model, SafetensorsFile weights)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(weights);
        var parameters = model.StateDict();
        foreach (var key in weights.TensorNames)
        {
            if (key.StartsWith(KeyPrefix, StringComparison.Ordinal) && key.EndsWith(".bias", StringComparison.Ordinal)
                && parameters.TryGetValue(key[KeyPrefix.Length..], out var bias))
                weights.ReadInto(key, bias);
        }
    }

    private static void WriteFolder(Module model, LoRAConfig config, List<(string, Tensor)> tensors, IEnumerable<string> adaptedPaths, string folder, string? baseModelNameOrPath)
    {
        foreach (var (path, bias) in SavedBiases(model, config.Bias)) tensors.Add((KeyPrefix + path, bias));

        Directory.CreateDirectory(folder);
        string weightsPath = Path.Combine(folder, WeightsFileName), configPath = Path.Combine(folder, ConfigFileName);
        string weightsTemp = AtomicFile.TempPathFor(weightsPath), configTemp = AtomicFile.TempPathFor(configPath);
        try
        {
            Safetensors.Save(weightsTemp, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            AtomicFile.WriteAllBytes(configTemp, ConfigJson(config, adaptedPaths, baseModelNameOrPath));
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
    /// Adds the adapter in <paramref name="folder"/> to <paramref name="peft"/> as <paramref name="adapterName"/>
    /// (inactive unless it is the first; see <see cref="PeftModel{TModel}.SetAdapter"/>). Nothing changes when the
    /// folder does not fit the model.
    /// </summary>
    /// <exception cref="InvalidDataException">The config is invalid, or keys and layers disagree; every mismatch is listed.</exception>
    /// <exception cref="SafetensorsFormatException">The weights file breaks the safetensors format.</exception>
    public static void Load<TModel>(PeftModel<TModel> peft, string folder, string adapterName = "default") where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(peft);
        LoadCore(peft.Model, folder, adapterName, config => peft.AddAdapter(adapterName, config));
    }

    /// <summary>
    /// Wraps <paramref name="model"/> with the adapter in <paramref name="folder"/> (QLoRA when
    /// <paramref name="quantization"/> is given) and returns the PEFT model, the adapter active. The model is left
    /// untouched when the folder does not fit it.
    /// </summary>
    /// <exception cref="InvalidDataException">The config is invalid, or keys and layers disagree; every mismatch is listed.</exception>
    /// <exception cref="SafetensorsFormatException">The weights file breaks the safetensors format.</exception>
    public static PeftModel<TModel> LoadInto<TModel>(TModel model, string folder, QuantizationConfig? quantization = null, string adapterName = "default")
        where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(model);
        PeftModel<TModel>? peft = null;
        LoadCore(model, folder, adapterName, config => peft = PeftModel.Create(model, config, quantization, adapterName));
        return peft!;
    }

    /// <summary>Reads <c>adapter_config.json</c> into a <see cref="LoRAConfig"/>, defaulting missing keys as PEFT does.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid LoRA config; the message names the key.</exception>
    public static LoRAConfig ReadConfig(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"PEFT adapter config not found: {path}", path);
        long length = new FileInfo(path).Length;
        if (length > MaxConfigBytes) throw new InvalidDataException($"{path}: {length:N0} bytes is too large for an adapter config.");
        var bytes = File.ReadAllBytes(path);
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new InvalidDataException($"{path}: not valid UTF-8.");
        try
        {
            using var document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 16 });
            var config = ParseConfig(path, document.RootElement);
            config.Validate();
            return config;
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

    // ---- loading ------------------------------------------------------------------------------------------------

    private static void LoadCore(Module model, string folder, string adapterName, Action<LoRAConfig> addAdapter)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(adapterName);
        var config = ReadConfig(Path.Combine(folder, ConfigFileName));
        string weightsPath = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"No {WeightsFileName} in {folder}.", weightsPath);
        using var file = SafetensorsFile.Open(weightsPath);
        var biases = CheckFits(model, config, file);
        try
        {
            addAdapter(config);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{Path.Combine(folder, ConfigFileName)}: {e.Message}", e);
        }
        foreach (var (path, module) in model.NamedModules())
        {
            if (module is not LoRALinear layer || !layer.AdapterNames.Contains(adapterName)) continue;
            file.ReadInto(KeyPrefix + path + SuffixA, layer.LoraA(adapterName));
            file.ReadInto(KeyPrefix + path + SuffixB, layer.LoraB(adapterName));
            if (layer.Magnitude(adapterName) is { } magnitude) file.ReadInto(KeyPrefix + path + SuffixMagnitude, magnitude);
        }
        foreach (var (key, parameter) in biases) file.ReadInto(key, parameter);
    }

    /// <summary>
    /// Compares the file with the layers <paramref name="config"/> adapts in <paramref name="model"/>, before the model
    /// changes, and throws one exception listing every key without a layer, every layer without its keys and every
    /// shape that differs. Returns the bias tensors to copy.
    /// </summary>
    private static List<(string Key, Tensor Parameter)> CheckFits(Module model, LoRAConfig config, SafetensorsFile file)
    {
        var expected = new Dictionary<string, int[]>(StringComparer.Ordinal);
        var linears = model.NamedModules()
            .Where(m => m.Module is LinearBase && !IsInsideAdapter(m.Path))
            .ToDictionary(m => m.Path, m => (LinearBase)m.Module, StringComparer.Ordinal);
        foreach (var (path, layer) in linears)
        {
            if (!IsSelected(config, path)) continue;
            int rank = config.RankFor(path);
            expected[KeyPrefix + path + SuffixA] = [rank, layer.InFeatures];
            expected[KeyPrefix + path + SuffixB] = [layer.OutFeatures, rank];
            if (config.UseDoRA) expected[KeyPrefix + path + SuffixMagnitude] = [layer.OutFeatures];
        }
        return CheckKeys(model, expected, file);
    }

    /// <summary>The shared half of <see cref="CheckFits"/>: compares the file's keys and shapes with <paramref name="expected"/>.</summary>
    private static List<(string Key, Tensor Parameter)> CheckKeys(Module model, IReadOnlyDictionary<string, int[]> expected, SafetensorsFile file)
    {
        var problems = new List<string>();
        var parameters = model.StateDict();
        var biases = new List<(string, Tensor)>();
        foreach (var key in file.TensorNames)
        {
            var info = file.GetInfo(key);
            int[]? shape = expected.TryGetValue(key, out var s) ? s : null;
            if (shape == null && key.StartsWith(KeyPrefix, StringComparison.Ordinal) && key.EndsWith(".bias", StringComparison.Ordinal)
                && parameters.TryGetValue(key[KeyPrefix.Length..], out var bias))
            {
                shape = bias.ShapeArray;
                biases.Add((key, bias));
            }
            if (shape == null)
                problems.Add($"key '{key}' {ShapeUtil.Format(info.Shape)} matches no layer the config adapts");
            else if (!info.Shape.AsSpan().SequenceEqual(shape))
                problems.Add($"key '{key}': expected {ShapeUtil.Format(shape)}, found {ShapeUtil.Format(info.Shape)}");
            else if (info.DType == null)
                problems.Add($"key '{key}' is stored as {info.DTypeName}; adapter weights must be F32, BF16 or F16");
        }
        foreach (var (key, shape) in expected)
            if (!file.Contains(key)) problems.Add($"key '{key}' {ShapeUtil.Format(shape)} is missing (its layer is targeted)");
        if (problems.Count > 0)
            throw new InvalidDataException($"{file.FilePath} does not fit the model ({problems.Count} mismatches): {string.Join("; ", problems)}.");
        return biases;
    }

    /// <summary>The same selection PEFT applies: targets, then exclusions, then the layer filter.</summary>
    private static bool IsSelected(LoRAConfig config, string path) =>
        config.Targets.Matches(path)
        && !config.Exclude.Any(e => TargetModules.MatchesName(path, e))
        && (config.Layers is not { } layers || layers.Any(i => path.Contains($"layers.{i}.", StringComparison.Ordinal)));

    private static bool IsInsideAdapter(string path) =>
        path.Contains(".lora_A.", StringComparison.Ordinal) || path.Contains(".lora_B.", StringComparison.Ordinal)
        || path.EndsWith(".base_layer", StringComparison.Ordinal);

    private static LoRAConfig ParseConfig(string path, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: the config must be a JSON object, found {root.ValueKind}.");
        string peftType = GetString(path, root, "peft_type")
            ?? throw new InvalidDataException($"{path}: \"peft_type\" is missing; only \"LORA\" adapters load here.");
        if (peftType != "LORA") throw new InvalidDataException($"{path}: peft_type \"{peftType}\" is not supported; only \"LORA\" adapters load here{peftType switch
        {
            "IA3" => " (load IA3 adapters with Formats.IA3AdapterFile)",
            "PROMPT_TUNING" or "PREFIX_TUNING" or "P_TUNING" => " (load prompt-learning adapters with Formats.PromptLearningAdapterFile)",
            _ => "",
        }}.");
        if (GetBool(path, root, "fan_in_fan_out") == true)
            throw new InvalidDataException($"{path}: fan_in_fan_out = true (Conv1D weights stored [in, out]) is not supported; Llama linears are [out, in].");
        if (root.TryGetProperty("modules_to_save", out var toSave) && toSave.ValueKind == JsonValueKind.Array && toSave.GetArrayLength() > 0)
            throw new InvalidDataException($"{path}: modules_to_save (full copies of non-LoRA modules) is not supported.");

        var bias = (GetString(path, root, "bias") ?? "none") switch
        {
            "none" => LoRABias.None,
            "all" => LoRABias.All,
            "lora_only" => LoRABias.LoraOnly,
            var other => throw new InvalidDataException($"{path}: bias \"{other}\" is not one of \"none\", \"all\", \"lora_only\"."),
        };
        var init = root.TryGetProperty("init_lora_weights", out var initValue) && initValue.ValueKind == JsonValueKind.String
            && initValue.GetString() == "gaussian" ? LoRAInit.Gaussian : LoRAInit.KaimingUniform;
        return new LoRAConfig
        {
            Rank = GetInt(path, root, "r") ?? 8,
            Alpha = GetFloat(path, root, "lora_alpha") ?? 8f,
            Dropout = GetFloat(path, root, "lora_dropout") ?? 0f,
            UseRsLoRA = GetBool(path, root, "use_rslora") ?? false,
            UseDoRA = GetBool(path, root, "use_dora") ?? false,
            Bias = bias,
            Init = init,
            Targets = ParseTargets(path, root),
            Exclude = ParseExclude(path, root),
            Layers = ParseLayers(path, root),
            RankPattern = ParsePattern<int>(path, root, "rank_pattern", v => v.TryGetInt32(out int r) ? r : null),
            AlphaPattern = ParsePattern<float>(path, root, "alpha_pattern", v => v.TryGetDouble(out double a) ? (float)a : null),
        };
    }

    private static TargetModules ParseTargets(string path, JsonElement root)
    {
        if (!root.TryGetProperty("target_modules", out var value) || value.ValueKind == JsonValueKind.Null)
            return TargetModules.List("q_proj", "v_proj"); // PEFT's default for Llama models
        if (value.ValueKind == JsonValueKind.String)
        {
            string text = value.GetString()!;
            return text == "all-linear" ? TargetModules.AllLinear : TargetModules.Regex(text);
        }
        return TargetModules.List(StringList(path, value, "target_modules"));
    }

    private static IReadOnlyList<string> ParseExclude(string path, JsonElement root)
    {
        if (!root.TryGetProperty("exclude_modules", out var value) || value.ValueKind == JsonValueKind.Null) return [];
        if (value.ValueKind == JsonValueKind.String)
            throw new InvalidDataException($"{path}: exclude_modules as a regular expression is not supported; list the module names instead.");
        return StringList(path, value, "exclude_modules");
    }

    private static IReadOnlyList<int>? ParseLayers(string path, JsonElement root)
    {
        if (!root.TryGetProperty("layers_to_transform", out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind == JsonValueKind.Number) return [ToInt(path, value, "layers_to_transform")];
        if (value.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: layers_to_transform must be null, an integer or a list of integers, found {value.ValueKind}.");
        return value.EnumerateArray().Select(v => ToInt(path, v, "layers_to_transform")).ToList();
    }

    private static Dictionary<string, T> ParsePattern<T>(string path, JsonElement root, string key, Func<JsonElement, T?> read) where T : struct
    {
        var result = new Dictionary<string, T>(StringComparer.Ordinal);
        if (!root.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null) return result;
        if (value.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: {key} must be an object, found {value.ValueKind}.");
        foreach (var entry in value.EnumerateObject())
            result[entry.Name] = (entry.Value.ValueKind == JsonValueKind.Number ? read(entry.Value) : null)
                ?? throw new InvalidDataException($"{path}: {key}['{entry.Name}'] must be a number, found {entry.Value}.");
        return result;
    }

    private static string[] StringList(string path, JsonElement value, string key)
    {
        if (value.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: {key} must be a list of names or a string, found {value.ValueKind}.");
        return value.EnumerateArray().Select(v => v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new InvalidDataException($"{path}: {key} must hold strings, found {v.ValueKind}.")).ToArray();
    }

    private static string? GetString(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : throw new InvalidDataException($"{path}: {key} must be a string, found {v.ValueKind}.");

    private static bool? GetBool(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
        : throw new InvalidDataException($"{path}: {key} must be true or false, found {v.ValueKind}.");

    private static int? GetInt(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null : ToInt(path, v, key);

    private static int ToInt(string path, JsonElement v, string key) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
        : throw new InvalidDataException($"{path}: {key} must be an integer, found {v}.");

    private static float? GetFloat(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) ? (float)d
        : throw new InvalidDataException($"{path}: {key} must be a number, found {v.ValueKind}.");

    // ---- saving -------------------------------------------------------------------------------------------------

    /// <summary>Biases PEFT saves with the adapter: every bias for "all", those of adapted layers for "lora_only".</summary>
    private static IEnumerable<(string Path, Tensor Bias)> SavedBiases(Module model, LoRABias mode) =>
        mode == LoRABias.None ? [] : model.NamedParameters().Where(p => p.Path.EndsWith(".bias", StringComparison.Ordinal)
            && (mode == LoRABias.All || p.Path.Contains(".base_layer.", StringComparison.Ordinal)));

    private static byte[] ConfigJson(LoRAConfig config, IEnumerable<string> adaptedPaths, string? baseModel)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("peft_type", "LORA");
            w.WriteString("task_type", "CAUSAL_LM");
            if (baseModel == null) w.WriteNull("base_model_name_or_path");
            else w.WriteString("base_model_name_or_path", baseModel);
            w.WriteNumber("r", config.Rank);
            w.WriteNumber("lora_alpha", config.Alpha);
            w.WriteNumber("lora_dropout", config.Dropout);
            w.WritePropertyName("target_modules");
            if (config.Targets.Pattern != null) w.WriteStringValue(config.Targets.Pattern);
            else
            {
                // The distinct leaf names actually adapted: what PEFT records after resolving "all-linear" or suffixes.
                w.WriteStartArray();
                foreach (var leaf in adaptedPaths.Select(p => p[(p.LastIndexOf('.') + 1)..]).Distinct().Order(StringComparer.Ordinal))
                    w.WriteStringValue(leaf);
                w.WriteEndArray();
            }
            w.WritePropertyName("exclude_modules");
            if (config.Exclude.Count == 0) w.WriteNullValue();
            else
            {
                w.WriteStartArray();
                foreach (var e in config.Exclude) w.WriteStringValue(e);
                w.WriteEndArray();
            }
            w.WriteString("bias", config.Bias switch { LoRABias.All => "all", LoRABias.LoraOnly => "lora_only", _ => "none" });
            w.WriteBoolean("use_rslora", config.UseRsLoRA);
            w.WriteBoolean("use_dora", config.UseDoRA);
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("inference_mode", true);
            if (config.Init == LoRAInit.Gaussian) w.WriteString("init_lora_weights", "gaussian");
            else w.WriteBoolean("init_lora_weights", true);
            w.WriteStartObject("rank_pattern");
            foreach (var (key, r) in config.RankPattern) w.WriteNumber(key, r);
            w.WriteEndObject();
            w.WriteStartObject("alpha_pattern");
            foreach (var (key, a) in config.AlphaPattern) w.WriteNumber(key, a);
            w.WriteEndObject();
            w.WritePropertyName("layers_to_transform");
            if (config.Layers == null) w.WriteNullValue();
            else
            {
                w.WriteStartArray();
                foreach (int i in config.Layers) w.WriteNumberValue(i);
                w.WriteEndArray();
            }
            w.WriteNull("modules_to_save");
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }
}
