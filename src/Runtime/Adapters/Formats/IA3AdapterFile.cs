using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Adapters.Formats;

/// <summary>
/// (IA)³ adapters in Hugging Face PEFT's folder format: <c>adapter_config.json</c> (peft_type "IA3", target_modules,
/// feedforward_modules, …) and <c>adapter_model.safetensors</c> with one key per adapted layer,
/// <c>base_model.model.&lt;path&gt;.ia3_l</c>, shaped as PEFT's parameter: [out, 1] for a layer that scales its output,
/// [1, in] for a feed-forward layer that scales its input. The adapter name never appears in the keys.
/// </summary>
public static class IA3AdapterFile
{
    private const string KeyPrefix = "base_model.model.";
    private const string Suffix = ".ia3_l";

    /// <summary>Writes adapter <paramref name="adapter"/> of <paramref name="ia3"/> to <paramref name="folder"/> (atomically, both files renamed into place).</summary>
    public static void Save<TModel>(IA3Model<TModel> ia3, string folder, string adapter = "default", string? baseModelNameOrPath = null)
        where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(ia3);
        ArgumentNullException.ThrowIfNull(folder);
        var config = ia3.GetConfig(adapter);
        var layers = ia3.IA3Layers.Where(l => l.Layer.AdapterNames.Contains(adapter)).ToList();
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        var tensors = layers.Select(l => (KeyPrefix + l.Path + Suffix, l.Layer.Vector(adapter).Reshape(PeftShape(l.Layer)))).ToList();
        var json = AdapterConfigJson.Build(w =>
        {
            w.WriteString("peft_type", "IA3");
            w.WriteString("task_type", "CAUSAL_LM");
            if (baseModelNameOrPath == null) w.WriteNull("base_model_name_or_path");
            else w.WriteString("base_model_name_or_path", baseModelNameOrPath);
            w.WriteNull("revision");
            w.WriteBoolean("inference_mode", true);
            // The distinct leaf names actually adapted: what PEFT records after resolving suffixes.
            AdapterConfigJson.WriteTargets(w, "target_modules", config.Targets, layers.Select(l => Leaf(l.Path)));
            AdapterConfigJson.WriteTargets(w, "feedforward_modules", config.FeedForward, layers.Where(l => l.Layer.IsFeedForward).Select(l => Leaf(l.Path)));
            w.WritePropertyName("exclude_modules");
            if (config.Exclude.Count == 0) w.WriteNullValue();
            else
            {
                w.WriteStartArray();
                foreach (var e in config.Exclude) w.WriteStringValue(e);
                w.WriteEndArray();
            }
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("init_ia3_weights", config.InitWeights);
            w.WriteNull("modules_to_save");
        });
        AdapterConfigJson.WriteFolder(folder, tensors, json);
    }

    /// <summary>
    /// Wraps <paramref name="model"/> with the (IA)³ adapter in <paramref name="folder"/> and returns it, the adapter active.
    /// The model is left untouched when the folder does not fit it.
    /// </summary>
    /// <exception cref="InvalidDataException">The config is invalid, or keys and layers disagree; every mismatch is listed.</exception>
    public static IA3Model<TModel> LoadInto<TModel>(TModel model, string folder, string adapterName = "default") where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(model);
        IA3Model<TModel>? ia3 = null;
        LoadCore(model, folder, adapterName, config => ia3 = IA3Model<TModel>.Create(model, config, adapterName));
        return ia3!;
    }

    /// <summary>Adds the adapter in <paramref name="folder"/> to <paramref name="ia3"/> as <paramref name="adapterName"/> (inactive unless it is the first).</summary>
    /// <exception cref="InvalidDataException">The config is invalid, or keys and layers disagree; every mismatch is listed.</exception>
    public static void Load<TModel>(IA3Model<TModel> ia3, string folder, string adapterName = "default") where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(ia3);
        LoadCore(ia3.Model, folder, adapterName, config => ia3.AddAdapter(adapterName, config));
    }

    /// <summary>Reads <c>adapter_config.json</c> into an <see cref="IA3Config"/>, defaulting missing keys as PEFT does for Llama.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid IA3 config; the message names the key.</exception>
    public static IA3Config ReadConfig(string path)
    {
        using var document = AdapterConfigJson.Open(path, "IA3");
        var root = document.RootElement;
        if (AdapterConfigJson.GetBool(path, root, "fan_in_fan_out") == true)
            throw new InvalidDataException($"{path}: fan_in_fan_out = true (Conv1D weights stored [in, out]) is not supported; Llama linears are [out, in].");
        var config = new IA3Config
        {
            Targets = AdapterConfigJson.GetTargets(path, root, "target_modules") ?? new IA3Config().Targets,
            FeedForward = root.TryGetProperty("feedforward_modules", out _) ? AdapterConfigJson.GetTargets(path, root, "feedforward_modules") : new IA3Config().FeedForward,
            Exclude = root.TryGetProperty("exclude_modules", out var exclude) && exclude.ValueKind == JsonValueKind.Array
                ? AdapterConfigJson.StringList(path, exclude, "exclude_modules")
                : exclude.ValueKind == JsonValueKind.String
                    ? throw new InvalidDataException($"{path}: exclude_modules as a regular expression is not supported; list the module names instead.")
                    : [],
            InitWeights = AdapterConfigJson.GetBool(path, root, "init_ia3_weights") ?? true,
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

    private static void LoadCore(Module model, string folder, string adapterName, Action<IA3Config> addAdapter)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(adapterName);
        string configPath = Path.Combine(folder, PeftAdapterFile.ConfigFileName);
        var config = ReadConfig(configPath);
        using var file = AdapterConfigJson.OpenWeights(folder);
        CheckFits(model, config, file);
        try
        {
            addAdapter(config);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{configPath}: {e.Message}", e);
        }
        foreach (var (path, module) in model.NamedModules())
            if (module is IA3Linear layer && layer.AdapterNames.Contains(adapterName))
                file.ReadInto(KeyPrefix + path + Suffix, layer.Vector(adapterName));
    }

    /// <summary>Compares the file with the layers the config adapts, before the model changes; lists every mismatch at once.</summary>
    private static void CheckFits(Module model, IA3Config config, SafetensorsFile file)
    {
        var expected = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var (path, module) in model.NamedModules())
        {
            if (module is not LinearBase layer || path.EndsWith(".base_layer", StringComparison.Ordinal)) continue;
            if (!config.Targets.Matches(path) || config.Exclude.Any(e => TargetModules.MatchesName(path, e))) continue;
            expected[KeyPrefix + path + Suffix] = config.IsFeedForward(path) ? [1, layer.InFeatures] : [layer.OutFeatures, 1];
        }
        var problems = new List<string>();
        foreach (var key in file.TensorNames)
        {
            var info = file.GetInfo(key);
            if (!expected.TryGetValue(key, out var shape))
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
    }

    private static int[] PeftShape(IA3Linear layer) => layer.IsFeedForward ? [1, layer.InFeatures] : [layer.OutFeatures, 1];

    private static string Leaf(string path) => path[(path.LastIndexOf('.') + 1)..];
}
