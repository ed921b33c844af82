using System.Globalization;
using System.Text.Json;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Adapters;

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
    private const string KeyPrefix = "base_model.model.";
    private const string SuffixB = ".vera_lambda_b";
    private const string SuffixD = ".vera_lambda_d";
    private const string KeyA = "base_model.vera_A";
    private const string KeyB = "base_model.vera_B";
    private const string GeneratorKey = "peftgen_vera_projections";
    private const string GeneratorValue = "xoshiro256**-kaiming-uniform-v1";
    private const long MaxConfigBytes = 16 << 20;

    /// <summary>Writes VeRA adapter <paramref name="adapter"/> of <paramref name="peft"/> to <paramref name="folder"/>, both files atomically.</summary>
    /// <exception cref="KeyNotFoundException"><paramref name="adapter"/> is not a VeRA adapter of the model.</exception>
    public static void Save<TModel>(PeftModel<TModel> peft, string folder, string adapter = "default", string? baseModelNameOrPath = null)
        where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(peft);
        ArgumentNullException.ThrowIfNull(folder);
        var config = peft.GetVeraConfig(adapter);
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
        Directory.CreateDirectory(folder);
        string weightsPath = Path.Combine(folder, PeftAdapterFile.WeightsFileName), configPath = Path.Combine(folder, PeftAdapterFile.ConfigFileName);
        string weightsTemp = AtomicFile.TempPathFor(weightsPath), configTemp = AtomicFile.TempPathFor(configPath);
        try
        {
            Safetensors.Save(weightsTemp, tensors, metadata);
            AtomicFile.WriteAllBytes(configTemp, ConfigJson(config, layers.Select(l => l.Path), baseModelNameOrPath));
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
    /// Wraps <paramref name="model"/> with the VeRA adapter in <paramref name="folder"/> (4-bit bases with
    /// <paramref name="quantization"/>) and returns the PEFT model. The model is untouched when the folder does not fit.
    /// </summary>
    /// <exception cref="InvalidDataException">The config is invalid, keys and layers disagree (every mismatch listed), or the projections are missing.</exception>
    public static PeftModel<TModel> LoadInto<TModel>(TModel model, string folder, QuantizationConfig? quantization = null, string adapterName = "default")
        where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(model);
        var (config, file, projections) = Open(model, folder, null);
        using (file)
        {
            PeftModel<TModel> peft;
            try
            {
                peft = PeftModel<TModel>.CreateVera(model, config, quantization, adapterName, projections);
            }
            catch (ArgumentException e)
            {
                projections.Dispose();
                throw new InvalidDataException($"{Path.Combine(folder, PeftAdapterFile.ConfigFileName)}: {e.Message}", e);
            }
            ReadVectors(peft, file, adapterName);
            return peft;
        }
    }

    /// <summary>
    /// Adds the VeRA adapter in <paramref name="folder"/> to <paramref name="peft"/> (inactive; see
    /// <see cref="PeftModel{TModel}.SetAdapter"/>). Its projections must equal the model's shared ones.
    /// </summary>
    /// <exception cref="InvalidDataException">The folder does not fit the model or its projections differ.</exception>
    public static void Load<TModel>(PeftModel<TModel> peft, string folder, string adapterName = "default") where TModel : Module
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
                peft.AddVeraAdapter(adapterName, config, projections);
            }
            catch (ArgumentException e)
            {
                throw new InvalidDataException($"{Path.Combine(folder, PeftAdapterFile.ConfigFileName)}: {e.Message}", e);
            }
            ReadVectors(peft, file, adapterName);
        }
    }

    /// <summary>Reads a PEFT <c>adapter_config.json</c> of peft_type "VERA", defaulting missing keys as PEFT does.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid VeRA config; the message names the key.</exception>
    public static VeraConfig ReadConfig(string path)
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

    /// <summary>Reads the config, opens the weights, checks every key and shape and returns the projections to use.</summary>
    private static (VeraConfig Config, SafetensorsFile File, VeraProjections Projections) Open(Module model, string folder, VeraProjections? existing)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var config = ReadConfig(Path.Combine(folder, PeftAdapterFile.ConfigFileName));
        string weightsPath = Path.Combine(folder, PeftAdapterFile.WeightsFileName);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"No {PeftAdapterFile.WeightsFileName} in {folder}.", weightsPath);
        var file = SafetensorsFile.Open(weightsPath);
        try
        {
            var layers = model.NamedModules()
                .Where(m => m.Module is LinearBase && !m.Path.EndsWith(".base_layer", StringComparison.Ordinal) && IsSelected(config, m.Path))
                .Select(m => (m.Path, Layer: (LinearBase)m.Module)).ToList();
            var problems = new List<string>();
            var expected = new Dictionary<string, int[]>(StringComparer.Ordinal);
            foreach (var (path, layer) in layers)
            {
                expected[KeyPrefix + path + SuffixB] = [layer.OutFeatures];
                expected[KeyPrefix + path + SuffixD] = [config.Rank];
            }
            if (layers.Count == 0) problems.Add($"the targets '{config.Targets}' match no linear layer of the model");
            bool hasProjections = file.Contains(KeyA) || file.Contains(KeyB);
            foreach (var key in file.TensorNames)
            {
                var info = file.GetInfo(key);
                if (key is KeyA or KeyB)
                {
                    if (info.Shape.Length != 2) problems.Add($"key '{key}' must be a matrix, found {ShapeUtil.Format(info.Shape)}");
                }
                else if (!expected.TryGetValue(key, out var shape))
                    problems.Add($"key '{key}' {ShapeUtil.Format(info.Shape)} matches no layer the config adapts");
                else if (!info.Shape.AsSpan().SequenceEqual(shape))
                    problems.Add($"key '{key}': expected {ShapeUtil.Format(shape)}, found {ShapeUtil.Format(info.Shape)}");
                if (info.DType == null) problems.Add($"key '{key}' is stored as {info.DTypeName}; VeRA weights must be F32, BF16 or F16");
            }
            foreach (var (key, shape) in expected)
                if (!file.Contains(key)) problems.Add($"key '{key}' {ShapeUtil.Format(shape)} is missing (its layer is targeted)");
            if (hasProjections && !(file.Contains(KeyA) && file.Contains(KeyB)))
                problems.Add($"only one of '{KeyA}' and '{KeyB}' is present");
            if (problems.Count > 0)
                throw new InvalidDataException($"{file.FilePath} does not fit the model ({problems.Count} mismatches): {string.Join("; ", problems)}.");

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

    private static void ReadVectors<TModel>(PeftModel<TModel> peft, SafetensorsFile file, string adapterName) where TModel : Module
    {
        foreach (var (path, layer) in peft.VeraLayers)
        {
            if (!layer.AdapterNames.Contains(adapterName)) continue;
            file.ReadInto(KeyPrefix + path + SuffixB, layer.LambdaB(adapterName));
            file.ReadInto(KeyPrefix + path + SuffixD, layer.LambdaD(adapterName));
        }
    }

    private static bool IsSelected(VeraConfig config, string path) =>
        config.Targets.Matches(path)
        && !config.Exclude.Any(e => TargetModules.MatchesName(path, e))
        && (config.Layers is not { } layers || layers.Any(i => path.Contains($"layers.{i}.", StringComparison.Ordinal)));

    private static VeraConfig ParseConfig(string path, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: the config must be a JSON object, found {root.ValueKind}.");
        string peftType = GetString(path, root, "peft_type")
            ?? throw new InvalidDataException($"{path}: \"peft_type\" is missing; VeraAdapterFile reads \"VERA\" adapters.");
        if (peftType != "VERA") throw new InvalidDataException($"{path}: peft_type \"{peftType}\" is not \"VERA\"; LoRA adapters load with PeftAdapterFile.");
        if (GetBool(path, root, "fan_in_fan_out") == true)
            throw new InvalidDataException($"{path}: fan_in_fan_out = true (Conv1D weights stored [in, out]) is not supported; Llama linears are [out, in].");
        if (root.TryGetProperty("modules_to_save", out var toSave) && toSave.ValueKind == JsonValueKind.Array && toSave.GetArrayLength() > 0)
            throw new InvalidDataException($"{path}: modules_to_save (full copies of non-VeRA modules) is not supported.");
        var bias = GetString(path, root, "bias") ?? "none";
        if (bias != "none") throw new InvalidDataException($"{path}: bias \"{bias}\" is not supported for VeRA; only \"none\" loads.");
        if (GetBool(path, root, "init_weights") == false)
            throw new InvalidDataException($"{path}: init_weights = false (random b and d) is not supported; the saved vectors are loaded over the default init anyway, so set it to true.");
        return new VeraConfig
        {
            Rank = GetInt(path, root, "r") ?? 256,
            Targets = ParseTargets(path, root),
            Exclude = ParseExclude(path, root),
            Layers = ParseLayers(path, root),
            ProjectionSeed = GetInt(path, root, "projection_prng_key") ?? 0,
            SaveProjection = GetBool(path, root, "save_projection") ?? true,
            Dropout = GetFloat(path, root, "vera_dropout") ?? 0f,
            DInitial = GetFloat(path, root, "d_initial") ?? 0.1f,
        };
    }

    private static TargetModules ParseTargets(string path, JsonElement root)
    {
        if (!root.TryGetProperty("target_modules", out var value) || value.ValueKind == JsonValueKind.Null)
            return TargetModules.List("q_proj", "v_proj"); // PEFT's VeRA default for Llama models
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

    private static byte[] ConfigJson(VeraConfig config, IEnumerable<string> adaptedPaths, string? baseModel)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("peft_type", "VERA");
            w.WriteString("task_type", "CAUSAL_LM");
            if (baseModel == null) w.WriteNull("base_model_name_or_path");
            else w.WriteString("base_model_name_or_path", baseModel);
            w.WriteNumber("r", config.Rank);
            w.WritePropertyName("target_modules");
            if (config.Targets.Pattern != null) w.WriteStringValue(config.Targets.Pattern);
            else
            {
                w.WriteStartArray();
                foreach (var leaf in adaptedPaths.Select(p => p[(p.LastIndexOf('.') + 1)..]).Distinct().Order(StringComparer.Ordinal))
                    w.WriteStringValue(leaf);
                w.WriteEndArray();
            }
            w.WriteNumber("projection_prng_key", config.ProjectionSeed);
            w.WriteBoolean("save_projection", config.SaveProjection);
            w.WriteNumber("vera_dropout", config.Dropout);
            w.WriteNumber("d_initial", config.DInitial);
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteString("bias", "none");
            w.WriteNull("modules_to_save");
            w.WriteBoolean("init_weights", true);
            w.WritePropertyName("layers_to_transform");
            if (config.Layers == null) w.WriteNullValue();
            else
            {
                w.WriteStartArray();
                foreach (int i in config.Layers) w.WriteNumberValue(i);
                w.WriteEndArray();
            }
            w.WriteNull("layers_pattern");
            w.WriteBoolean("inference_mode", true);
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }
}
