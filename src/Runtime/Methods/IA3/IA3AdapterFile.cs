using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.IA3;

/// <summary>
/// (IA)³ adapters in Hugging Face PEFT's folder format: <c>adapter_config.json</c> (peft_type "IA3", target_modules,
/// feedforward_modules, …) and <c>adapter_model.safetensors</c> with one key per adapted layer,
/// <c>base_model.model.&lt;path&gt;.ia3_l</c>, shaped as PEFT's parameter: [out, 1] for a layer that scales its output,
/// [1, in] for a feed-forward layer that scales its input. The adapter name never appears in the keys.
/// </summary>
public static class IA3AdapterFile
{
    private const string KeyPrefix = AdapterFolder.KeyPrefix;
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
            AdapterConfigJson.WriteHeader(w, "IA3", baseModelNameOrPath);
            w.WriteNull("revision");
            w.WriteBoolean("inference_mode", true);
            // The distinct leaf names actually adapted: what PEFT records after resolving suffixes.
            AdapterConfigJson.WriteTargets(w, "target_modules", config.Targets, layers.Select(l => AdapterConfigJson.Leaf(l.Path)));
            AdapterConfigJson.WriteTargets(w, "feedforward_modules", config.FeedForward, layers.Where(l => l.Layer.IsFeedForward).Select(l => AdapterConfigJson.Leaf(l.Path)));
            AdapterConfigJson.WriteNamesOrNull(w, "exclude_modules", config.Exclude);
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("init_ia3_weights", config.InitWeights);
            w.WriteNull("modules_to_save");
        });
        AdapterFolder.Write(folder, tensors, json, RopeOrder.Of(ia3.Model), OutputRows);
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
        AdapterConfigJson.RejectFanInFanOut(path, root);
        var config = new IA3Config
        {
            Targets = AdapterConfigJson.GetTargets(path, root, "target_modules") ?? new IA3Config().Targets,
            FeedForward = root.TryGetProperty("feedforward_modules", out _) ? AdapterConfigJson.GetTargets(path, root, "feedforward_modules") : new IA3Config().FeedForward,
            Exclude = AdapterConfigJson.GetExclude(path, root),
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
        string configPath = Path.Combine(folder, AdapterFolder.ConfigFileName);
        var config = ReadConfig(configPath);
        using var file = AdapterFolder.OpenWeights(folder, RopeOrder.Of(model), OutputRows);
        CheckFits(model, config, file);
        AdapterFolder.AddFromConfig(configPath, () => addAdapter(config));
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
        AdapterFolder.CompareKeys(file, expected, problems);
        AdapterFolder.ThrowIfAny(file.FilePath, problems);
    }

    /// <summary>An output vector [out, 1] of q_proj/k_proj follows their rows (reordered for interleaved RoPE); an input vector [1, in] does not.</summary>
    private static Reorder? OutputRows(RopeOrder rope, string key, IReadOnlyList<int> shape) =>
        key.EndsWith(Suffix, StringComparison.Ordinal) ? rope.Rows(key, shape) : null;

    private static int[] PeftShape(IA3Linear layer) => layer.IsFeedForward ? [1, layer.InFeatures] : [layer.OutFeatures, 1];
}
