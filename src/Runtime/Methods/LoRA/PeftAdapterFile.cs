using System.Text.Json;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

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
    public const string ConfigFileName = AdapterFolder.ConfigFileName;

    /// <summary>Name of the adapter weights file.</summary>
    public const string WeightsFileName = AdapterFolder.WeightsFileName;

    internal const string KeyPrefix = AdapterFolder.KeyPrefix;
    internal const string SuffixA = ".lora_A.weight";
    internal const string SuffixB = ".lora_B.weight";
    internal const string SuffixMagnitude = ".lora_magnitude_vector";

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
        var layers = peft.LoRALayers.Where(l => l.Layer.AdapterNames.Contains(adapter)).Select(l => (l.Path, (LinearBase)l.Layer)).ToList();
        WriteFolder(peft.Model, config, [.. AdapterLayers.FileTensors(layers, adapter)], layers.Select(l => l.Path), folder, baseModelNameOrPath);
    }

    /// <summary>
    /// Writes an adapter folder from the adapter's tensors given by file key (<c>base_model.model.&lt;path&gt;.lora_A.weight</c>
    /// [r, in], <c>.lora_B.weight</c> [out, r], <c>.lora_magnitude_vector</c> [out]), as generated <c>SaveAdapter</c>
    /// methods list them from typed members; the biases <paramref name="config"/>'s bias mode saves come from
    /// <paramref name="model"/>. Written like <see cref="Save{TModel}(PeftModel{TModel}, string, string, string?)"/>: in full under temporary names, then renamed.
    /// </summary>
    internal static void Save(Module model, LoRAConfig config, IReadOnlyList<(string Key, Tensor Tensor)> adapterTensors, string folder, string? baseModelNameOrPath = null)
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
    internal static SafetensorsFile OpenWeights(Module model, string folder, IReadOnlyDictionary<string, int[]> expected)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(expected);
        var file = AdapterFolder.OpenWeights(folder, RopeOrder.Of(model), OutputRows);
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
    internal static void ReadBiases(Module model, SafetensorsFile weights)
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
        AdapterFolder.Write(folder, tensors, ConfigJson(config, adaptedPaths, baseModelNameOrPath), RopeOrder.Of(model), OutputRows);
    }

    /// <summary>The tensors whose rows are a layer's output features: B, DoRA's magnitude and biases (reordered for interleaved RoPE).</summary>
    internal static Reorder? OutputRows(RopeOrder rope, string key, IReadOnlyList<int> shape) =>
        key.EndsWith(SuffixB, StringComparison.Ordinal) || key.EndsWith(SuffixMagnitude, StringComparison.Ordinal) || key.EndsWith(".bias", StringComparison.Ordinal)
            ? rope.Rows(key, shape) : null;

    /// <summary>
    /// Adds the adapter in <paramref name="folder"/> to <paramref name="peft"/> as <paramref name="adapterName"/>
    /// (inactive unless it is the first; see <see cref="AdaptedModel{TModel, TLayer, TConfig}.SetAdapter"/>). Nothing changes when the
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
    public static LoRAConfig ReadConfig(string path) => AdapterConfigJson.Read(path, root => ParseConfig(path, root), c => c.Validate());

    // ---- loading ------------------------------------------------------------------------------------------------

    private static void LoadCore(Module model, string folder, string adapterName, Action<LoRAConfig> addAdapter)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(adapterName);
        string configPath = Path.Combine(folder, ConfigFileName);
        var config = ReadConfig(configPath);
        using var file = AdapterFolder.OpenWeights(folder, RopeOrder.Of(model), OutputRows);
        var biases = CheckFits(model, config, file);
        AdapterFolder.AddFromConfig(configPath, () => addAdapter(config));
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
        var linears = model.NamedModules()
            .Where(m => m.Module is LinearBase && !TargetModules.IsInsideAdapter(m.Path))
            .Select(m => (m.Path, ((LinearBase)m.Module).InFeatures, ((LinearBase)m.Module).OutFeatures));
        return CheckKeys(model, ExpectedKeys(config, linears), file);
    }

    /// <summary>File key → shape of every tensor <paramref name="config"/> puts on the <paramref name="linears"/> it adapts (path, in, out).</summary>
    internal static Dictionary<string, int[]> ExpectedKeys(LoRAConfig config, IEnumerable<(string Path, int In, int Out)> linears)
    {
        var expected = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var (path, inFeatures, outFeatures) in linears)
        {
            if (!PeftModel.Adapts(config, path)) continue;
            int rank = config.RankFor(path);
            expected[KeyPrefix + path + SuffixA] = [rank, inFeatures];
            expected[KeyPrefix + path + SuffixB] = [outFeatures, rank];
            if (config.UseDoRA) expected[KeyPrefix + path + SuffixMagnitude] = [outFeatures];
        }
        return expected;
    }

    /// <summary>The shared half of <see cref="CheckFits"/>: compares the file's keys and shapes with <paramref name="expected"/>.</summary>
    private static List<(string Key, Tensor Parameter)> CheckKeys(Module model, IReadOnlyDictionary<string, int[]> expected, SafetensorsFile file)
    {
        var parameters = model.StateDict();
        return CheckKeys(file, expected, path => parameters.TryGetValue(path, out var p) ? p.ShapeArray : null)
            .Select(key => (key, parameters[key[KeyPrefix.Length..]])).ToList();
    }

    /// <summary>
    /// Compares the file's keys and shapes with <paramref name="expected"/>, accepting the saved bias of any model
    /// parameter <paramref name="parameterShape"/> knows (by path); throws listing every mismatch, else returns the bias keys.
    /// </summary>
    internal static List<string> CheckKeys(SafetensorsFile file, IReadOnlyDictionary<string, int[]> expected, Func<string, int[]?> parameterShape)
    {
        var problems = new List<string>();
        var biases = new List<string>();
        AdapterFolder.CompareKeys(file, expected, problems, (key, _) =>
        {
            if (!key.StartsWith(KeyPrefix, StringComparison.Ordinal) || !key.EndsWith(".bias", StringComparison.Ordinal)
                || parameterShape(key[KeyPrefix.Length..]) is not { } shape) return null;
            biases.Add(key);
            return shape;
        });
        AdapterFolder.ThrowIfAny(file.FilePath, problems);
        return biases;
    }

    private static LoRAConfig ParseConfig(string path, JsonElement root)
    {
        string peftType = AdapterConfigJson.GetString(path, root, "peft_type")
            ?? throw new InvalidDataException($"{path}: \"peft_type\" is missing; only \"LORA\" adapters load here.");
        if (peftType != "LORA") throw new InvalidDataException($"{path}: peft_type \"{peftType}\" is not supported; only \"LORA\" adapters load here{peftType switch
        {
            "IA3" => " (load IA3 adapters with IA3AdapterFile)",
            "PROMPT_TUNING" or "PREFIX_TUNING" or "P_TUNING" => " (load prompt-learning adapters with PromptLearningAdapterFile)",
            _ => "",
        }}.");
        AdapterConfigJson.RejectFanInFanOut(path, root);
        AdapterConfigJson.RejectModulesToSave(path, root, "non-LoRA");

        var bias = (AdapterConfigJson.GetString(path, root, "bias") ?? "none") switch
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
            Rank = AdapterConfigJson.GetInt(path, root, "r") ?? 8,
            Alpha = AdapterConfigJson.GetFloat(path, root, "lora_alpha") ?? 8f,
            Dropout = AdapterConfigJson.GetFloat(path, root, "lora_dropout") ?? 0f,
            UseRsLoRA = AdapterConfigJson.GetBool(path, root, "use_rslora") ?? false,
            UseDoRA = AdapterConfigJson.GetBool(path, root, "use_dora") ?? false,
            Bias = bias,
            Init = init,
            Targets = AdapterConfigJson.GetTargets(path, root, "target_modules") ?? TargetModules.List("q_proj", "v_proj"), // PEFT's default for Llama
            Exclude = AdapterConfigJson.GetExclude(path, root),
            Layers = AdapterConfigJson.GetLayers(path, root),
            RankPattern = AdapterConfigJson.GetPattern<int>(path, root, "rank_pattern", v => v.TryGetInt32(out int r) ? r : null),
            AlphaPattern = AdapterConfigJson.GetPattern<float>(path, root, "alpha_pattern", v => AdapterConfigJson.ToFloat(path, v, "alpha_pattern")),
        };
    }

    // ---- saving -------------------------------------------------------------------------------------------------

    /// <summary>Biases PEFT saves with the adapter: every bias for "all", those of adapted layers for "lora_only".</summary>
    private static IEnumerable<(string Path, Tensor Bias)> SavedBiases(Module model, LoRABias mode) =>
        mode == LoRABias.None ? [] : model.NamedParameters().Where(p => p.Path.EndsWith(".bias", StringComparison.Ordinal)
            && (mode == LoRABias.All || p.Path.Contains(".base_layer.", StringComparison.Ordinal)));

    private static byte[] ConfigJson(LoRAConfig config, IEnumerable<string> adaptedPaths, string? baseModel) => AdapterConfigJson.Build(w =>
    {
        AdapterConfigJson.WriteHeader(w, "LORA", baseModel);
        w.WriteNumber("r", config.Rank);
        w.WriteNumber("lora_alpha", config.Alpha);
        w.WriteNumber("lora_dropout", config.Dropout);
        // The distinct leaf names actually adapted: what PEFT records after resolving "all-linear" or suffixes.
        AdapterConfigJson.WriteTargets(w, "target_modules", config.Targets, adaptedPaths.Select(AdapterConfigJson.Leaf));
        AdapterConfigJson.WriteNamesOrNull(w, "exclude_modules", config.Exclude);
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
        AdapterConfigJson.WriteIntsOrNull(w, "layers_to_transform", config.Layers);
        w.WriteNull("modules_to_save");
    });
}
