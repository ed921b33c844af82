using System.Globalization;
using System.Text.Json;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Methods.VeRA;

/// <summary>
/// VeRA adapter folders in Hugging Face PEFT's format: <c>adapter_config.json</c> (PEFT's VeraConfig, peft_type "VERA")
/// and <c>adapter_model.safetensors</c> with <c>base_model.model.&lt;path&gt;.vera_lambda_b</c> [out] and
/// <c>.vera_lambda_d</c> [r] per layer, plus the shared projections <c>base_model.vera_A</c> [r, in_max] and
/// <c>base_model.vera_B</c> [out_max, r] when save_projection is true (PEFT drops the adapter name from every key).
/// Without saved projections PEFT regenerates them with PyTorch's generator, which PeftGen does not reproduce: such
/// files load only when PeftGen wrote them (it marks them in the safetensors metadata) and regenerates its own.
/// </summary>
public static class VeraAdapterFile
{
    private const string KeyPrefix = AdapterFolder.KeyPrefix;
    private const string SuffixB = ".vera_lambda_b";
    private const string SuffixD = ".vera_lambda_d";
    private const string KeyA = "base_model.vera_A";
    private const string KeyB = "base_model.vera_B";
    private const string GeneratorKey = "peftgen_vera_projections";
    private const string GeneratorValue = "xoshiro256**-kaiming-uniform-v1";

    /// <summary>Writes VeRA adapter <paramref name="adapter"/> of <paramref name="peft"/> to <paramref name="folder"/>, both files atomically.</summary>
    /// <exception cref="KeyNotFoundException"><paramref name="adapter"/> is not a VeRA adapter of the model.</exception>
    public static void Save<TModel>(VeraModel<TModel> peft, string folder, string adapter = "default", string? baseModelNameOrPath = null)
        where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(peft);
        ArgumentNullException.ThrowIfNull(folder);
        var config = peft.GetConfig(adapter);
        var layers = peft.VeraLayers.Where(l => l.Layer.AdapterNames.Contains(adapter)).ToList();
        var tensors = new List<(string, Tensor)>();
        foreach (var (path, layer) in layers)
        {
            tensors.Add((KeyPrefix + path + SuffixB, layer.LambdaB(adapter)));
            tensors.Add((KeyPrefix + path + SuffixD, layer.LambdaD(adapter)));
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        var projections = peft.VeraProjections!;
        if (config.SaveProjection)
        {
            tensors.Add((KeyA, projections.A));
            tensors.Add((KeyB, projections.B));
        }
        else
        {
            if (projections.Seed != config.ProjectionSeed)
                throw new InvalidOperationException($"VeRA adapter '{adapter}' uses projections loaded from a file, which its seed cannot regenerate: save it with SaveProjection = true.");
            metadata[GeneratorKey] = GeneratorValue;
        }
        ThrowIfRotaryRows(peft.Model, layers.Select(l => (l.Path, l.Layer.OutFeatures)), path =>
            new InvalidOperationException($"VeRA adapter '{adapter}' adapts '{path}' of a model with interleaved RoPE (llama2.c): " + RotaryRowsReason));
        AdapterFolder.Write(folder, tensors, ConfigJson(config, layers.Select(l => l.Path), baseModelNameOrPath), metadata: metadata);
    }

    /// <summary>
    /// Wraps <paramref name="model"/> with the VeRA adapter in <paramref name="folder"/> (4-bit bases with
    /// <paramref name="quantization"/>) and returns the PEFT model. The model is untouched when the folder does not fit.
    /// </summary>
    /// <exception cref="InvalidDataException">The config is invalid, keys and layers disagree (every mismatch listed), or the projections are missing.</exception>
    public static VeraModel<TModel> LoadInto<TModel>(TModel model, string folder, QuantizationConfig? quantization = null, string adapterName = "default")
        where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(model);
        var (config, file, projections) = Open(model, folder, null);
        using (file)
        {
            VeraModel<TModel> peft;
            try
            {
                peft = VeraModel<TModel>.Create(model, config, quantization, adapterName, projections);
            }
            catch (ArgumentException e)
            {
                projections.Dispose();
                throw new InvalidDataException($"{Path.Combine(folder, AdapterFolder.ConfigFileName)}: {e.Message}", e);
            }
            ReadVectors(peft, file, adapterName);
            return peft;
        }
    }

    /// <summary>
    /// Adds the VeRA adapter in <paramref name="folder"/> to <paramref name="peft"/> (inactive; see
    /// <see cref="AdaptedModel{TModel, TLayer, TConfig}.SetAdapter"/>). Its projections must equal the model's shared ones.
    /// </summary>
    /// <exception cref="InvalidDataException">The folder does not fit the model or its projections differ.</exception>
    public static void Load<TModel>(VeraModel<TModel> peft, string folder, string adapterName = "default") where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(peft);
        var (config, file, projections) = Open(peft.Model, folder, peft.VeraProjections);
        using (file)
        {
            try
            {
                if (peft.VeraProjections != null && !ReferenceEquals(projections, peft.VeraProjections))
                {
                    bool same = peft.VeraProjections.SameValues(projections);
                    projections.Dispose();
                    if (!same)
                        throw new InvalidDataException($"{file.FilePath}: its vera_A / vera_B differ from the projections this model's VeRA adapters share; VeRA adapters of one model must share them.");
                    projections = peft.VeraProjections;
                }
                peft.AddAdapter(adapterName, config, projections);
            }
            catch (ArgumentException e)
            {
                throw new InvalidDataException($"{Path.Combine(folder, AdapterFolder.ConfigFileName)}: {e.Message}", e);
            }
            ReadVectors(peft, file, adapterName);
        }
    }

    /// <summary>Reads a PEFT <c>adapter_config.json</c> of peft_type "VERA", defaulting missing keys as PEFT does.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid VeRA config; the message names the key.</exception>
    public static VeraConfig ReadConfig(string path) => AdapterConfigJson.Read(path, root => ParseConfig(path, root), c => c.Validate());

    // ---- loading ------------------------------------------------------------------------------------------------

    /// <summary>Reads the config, opens the weights, checks every key and shape and returns the projections to use.</summary>
    private static (VeraConfig Config, SafetensorsFile File, VeraProjections Projections) Open(Module model, string folder, VeraProjections? existing)
    {
        ArgumentNullException.ThrowIfNull(folder);
        string configPath = Path.Combine(folder, AdapterFolder.ConfigFileName);
        var config = ReadConfig(configPath);
        var layers = model.NamedModules()
            .Where(m => m.Module is LinearBase && !m.Path.EndsWith(".base_layer", StringComparison.Ordinal)
                && TargetModules.Selects(config.Targets, config.Exclude, config.Layers, m.Path))
            .Select(m => (m.Path, Layer: (LinearBase)m.Module)).ToList();
        ThrowIfRotaryRows(model, layers.Select(l => (l.Path, l.Layer.OutFeatures)), path =>
            new InvalidDataException($"{configPath}: the adapter targets '{path}' and the model uses interleaved RoPE (llama2.c): " + RotaryRowsReason));
        var file = AdapterFolder.OpenWeights(folder);
        try
        {
            var problems = new List<string>();
            var expected = new Dictionary<string, int[]>(StringComparer.Ordinal);
            foreach (var (path, layer) in layers)
            {
                expected[KeyPrefix + path + SuffixB] = [layer.OutFeatures];
                expected[KeyPrefix + path + SuffixD] = [config.Rank];
            }
            if (layers.Count == 0) problems.Add($"the targets '{config.Targets}' match no linear layer of the model");
            bool hasProjections = file.Contains(KeyA) || file.Contains(KeyB);
            AdapterFolder.CompareKeys(file, expected, problems, (key, info) =>
            {
                if (key is not (KeyA or KeyB)) return null;
                if (info.Shape.Length != 2) problems.Add($"key '{key}' must be a matrix, found {ShapeUtil.Format(info.Shape)}");
                return info.Shape;
            });
            if (hasProjections && !(file.Contains(KeyA) && file.Contains(KeyB)))
                problems.Add($"only one of '{KeyA}' and '{KeyB}' is present");
            AdapterFolder.ThrowIfAny(file.FilePath, problems);

            VeraProjections projections;
            if (hasProjections)
            {
                using var a = file.ReadTensor(KeyA, DType.Float32);
                using var b = file.ReadTensor(KeyB, DType.Float32);
                try
                {
                    projections = VeraProjections.FromTensors(a, b);
                }
                catch (ArgumentException e)
                {
                    throw new InvalidDataException($"{file.FilePath}: {e.Message}", e);
                }
            }
            else if (config.SaveProjection)
                throw new InvalidDataException($"{file.FilePath}: adapter_config.json says save_projection = true but '{KeyA}' and '{KeyB}' are missing.");
            else if (existing != null) projections = existing;
            else if (file.Metadata.TryGetValue(GeneratorKey, out var generator) && generator == GeneratorValue)
                projections = VeraProjections.Generate(config.Rank, layers.Max(l => l.Layer.InFeatures), layers.Max(l => l.Layer.OutFeatures), config.ProjectionSeed);
            else
                throw new InvalidDataException(
                    $"{file.FilePath} holds no vera_A / vera_B (save_projection = false): PEFT would regenerate them from projection_prng_key " +
                    $"{config.ProjectionSeed} with PyTorch's random generator, which PeftGen does not reproduce. Re-save the adapter in Python with " +
                    "save_projection=True.");
            try
            {
                foreach (var (path, layer) in layers) projections.CheckCovers(path, config.Rank, layer.InFeatures, layer.OutFeatures);
            }
            catch (ArgumentException e)
            {
                if (!ReferenceEquals(projections, existing)) projections.Dispose();
                throw new InvalidDataException($"{file.FilePath}: {e.Message}", e);
            }
            return (config, file, projections);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static void ReadVectors<TModel>(VeraModel<TModel> peft, SafetensorsFile file, string adapterName) where TModel : Module
    {
        foreach (var (path, layer) in peft.VeraLayers)
        {
            if (!layer.AdapterNames.Contains(adapterName)) continue;
            file.ReadInto(KeyPrefix + path + SuffixB, layer.LambdaB(adapterName));
            file.ReadInto(KeyPrefix + path + SuffixD, layer.LambdaD(adapterName));
        }
    }

    private const string RotaryRowsReason =
        "VeRA cannot store its q_proj/k_proj vectors in Hugging Face's rotate-half row order, because the vera_B rows they scale are shared by every " +
        "layer. Target other layers (v_proj, o_proj, the MLP), or convert the model with HuggingFaceLlama.ConvertLlama2C and use the converted one.";

    /// <summary>VeRA on q/k of an interleaved-RoPE model has no Hugging Face form (its projections are shared): refuse it.</summary>
    private static void ThrowIfRotaryRows(Module model, IEnumerable<(string Path, int OutFeatures)> layers, Func<string, Exception> error)
    {
        if (RopeOrder.Of(model) is not { } rope) return;
        foreach (var (path, outFeatures) in layers)
            if (rope.Rows(KeyPrefix + path + SuffixB, [outFeatures]) != null) throw error(path);
    }

    private static VeraConfig ParseConfig(string path, JsonElement root)
    {
        string peftType = AdapterConfigJson.GetString(path, root, "peft_type")
            ?? throw new InvalidDataException($"{path}: \"peft_type\" is missing; VeraAdapterFile reads \"VERA\" adapters.");
        if (peftType != "VERA") throw new InvalidDataException($"{path}: peft_type \"{peftType}\" is not \"VERA\"; LoRA adapters load with PeftAdapterFile.");
        AdapterConfigJson.RejectFanInFanOut(path, root);
        AdapterConfigJson.RejectModulesToSave(path, root, "non-VeRA");
        var bias = AdapterConfigJson.GetString(path, root, "bias") ?? "none";
        if (bias != "none") throw new InvalidDataException($"{path}: bias \"{bias}\" is not supported for VeRA; only \"none\" loads.");
        if (AdapterConfigJson.GetBool(path, root, "init_weights") == false)
            throw new InvalidDataException($"{path}: init_weights = false (random b and d) is not supported; the saved vectors are loaded over the default init anyway, so set it to true.");
        return new VeraConfig
        {
            Rank = AdapterConfigJson.GetInt(path, root, "r") ?? 256,
            Targets = AdapterConfigJson.GetTargets(path, root, "target_modules") ?? TargetModules.List("q_proj", "v_proj"), // PEFT's VeRA default for Llama
            Exclude = AdapterConfigJson.GetExclude(path, root),
            Layers = AdapterConfigJson.GetLayers(path, root),
            ProjectionSeed = AdapterConfigJson.GetInt(path, root, "projection_prng_key") ?? 0,
            SaveProjection = AdapterConfigJson.GetBool(path, root, "save_projection") ?? true,
            Dropout = AdapterConfigJson.GetFloat(path, root, "vera_dropout") ?? 0f,
            DInitial = AdapterConfigJson.GetFloat(path, root, "d_initial") ?? 0.1f,
        };
    }

    // ---- saving -------------------------------------------------------------------------------------------------

    private static byte[] ConfigJson(VeraConfig config, IEnumerable<string> adaptedPaths, string? baseModel) => AdapterConfigJson.Build(w =>
    {
        AdapterConfigJson.WriteHeader(w, "VERA", baseModel);
        w.WriteNumber("r", config.Rank);
        AdapterConfigJson.WriteTargets(w, "target_modules", config.Targets, adaptedPaths.Select(AdapterConfigJson.Leaf));
        w.WriteNumber("projection_prng_key", config.ProjectionSeed);
        w.WriteBoolean("save_projection", config.SaveProjection);
        w.WriteNumber("vera_dropout", config.Dropout);
        w.WriteNumber("d_initial", config.DInitial);
        w.WriteBoolean("fan_in_fan_out", false);
        w.WriteString("bias", "none");
        w.WriteNull("modules_to_save");
        w.WriteBoolean("init_weights", true);
        AdapterConfigJson.WriteIntsOrNull(w, "layers_to_transform", config.Layers);
        w.WriteNull("layers_pattern");
        w.WriteBoolean("inference_mode", true);
    });
}
