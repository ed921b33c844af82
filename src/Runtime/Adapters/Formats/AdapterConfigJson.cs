using System.Text.Json;

namespace PeftGen.Adapters.Formats;

/// <summary>
/// Reading and writing helpers for PEFT's <c>adapter_config.json</c>: size and UTF-8 checks, typed getters whose errors
/// name the file and the key, and the folder write (both files under temporary names, then renamed into place).
/// </summary>
internal static class AdapterConfigJson
{
    private const long MaxConfigBytes = 16 << 20;

    /// <summary>Parses the config file and checks its "peft_type" is <paramref name="peftTypes"/>; returns the root object.</summary>
    public static JsonDocument Open(string path, params string[] peftTypes)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"PEFT adapter config not found: {path}", path);
        long length = new FileInfo(path).Length;
        if (length > MaxConfigBytes) throw new InvalidDataException($"{path}: {length:N0} bytes is too large for an adapter config.");
        var bytes = File.ReadAllBytes(path);
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new InvalidDataException($"{path}: not valid UTF-8.");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e);
        }
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            document.Dispose();
            throw new InvalidDataException($"{path}: the config must be a JSON object, found {root.ValueKind}.");
        }
        string? peftType = GetString(path, root, "peft_type");
        if (peftType == null || !peftTypes.Contains(peftType, StringComparer.Ordinal))
        {
            document.Dispose();
            throw new InvalidDataException($"{path}: peft_type is {(peftType == null ? "missing" : $"\"{peftType}\"")}; this loader reads {string.Join(", ", peftTypes.Select(t => $"\"{t}\""))}.");
        }
        if (root.TryGetProperty("modules_to_save", out var toSave) && toSave.ValueKind == JsonValueKind.Array && toSave.GetArrayLength() > 0)
        {
            document.Dispose();
            throw new InvalidDataException($"{path}: modules_to_save (full copies of other modules) is not supported.");
        }
        return document;
    }

    public static string? GetString(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : throw new InvalidDataException($"{path}: {key} must be a string, found {v.ValueKind}.");

    public static bool? GetBool(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
        : throw new InvalidDataException($"{path}: {key} must be true or false, found {v.ValueKind}.");

    public static int? GetInt(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
        : throw new InvalidDataException($"{path}: {key} must be an integer, found {v}.");

    /// <summary>Reads a PEFT module selection: null (absent), a regex string ("all-linear" included) or a list of names.</summary>
    public static TargetModules? GetTargets(string path, JsonElement root, string key)
    {
        if (!root.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        try
        {
            if (value.ValueKind == JsonValueKind.String)
            {
                string text = value.GetString()!;
                return text == "all-linear" ? TargetModules.AllLinear : TargetModules.Regex(text);
            }
            return TargetModules.List(StringList(path, value, key));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: {key}: {e.Message}", e);
        }
    }

    public static string[] StringList(string path, JsonElement value, string key)
    {
        if (value.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: {key} must be a list of names or a string, found {value.ValueKind}.");
        return value.EnumerateArray().Select(v => v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new InvalidDataException($"{path}: {key} must hold strings, found {v.ValueKind}.")).ToArray();
    }

    /// <summary>Writes a module selection as PEFT does: a regex as a string, names as a list.</summary>
    public static void WriteTargets(Utf8JsonWriter w, string key, TargetModules? targets, IEnumerable<string> names)
    {
        w.WritePropertyName(key);
        if (targets == null) w.WriteNullValue();
        else if (targets.Pattern != null) w.WriteStringValue(targets.Pattern);
        else
        {
            w.WriteStartArray();
            foreach (var name in names.Distinct().Order(StringComparer.Ordinal)) w.WriteStringValue(name);
            w.WriteEndArray();
        }
    }

    /// <summary>Builds the config text with <paramref name="write"/> filling the open object.</summary>
    public static byte[] Build(Action<Utf8JsonWriter> write)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            write(w);
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>
    /// Writes <c>adapter_model.safetensors</c> and <c>adapter_config.json</c> into <paramref name="folder"/> (created
    /// when missing): both in full under temporary names first, then renamed into place.
    /// </summary>
    public static void WriteFolder(string folder, IEnumerable<(string Name, Tensors.Tensor Tensor)> tensors, byte[] config)
    {
        Directory.CreateDirectory(folder);
        string weightsPath = Path.Combine(folder, PeftAdapterFile.WeightsFileName), configPath = Path.Combine(folder, PeftAdapterFile.ConfigFileName);
        string weightsTemp = IO.AtomicFile.TempPathFor(weightsPath), configTemp = IO.AtomicFile.TempPathFor(configPath);
        try
        {
            IO.Safetensors.Save(weightsTemp, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            IO.AtomicFile.WriteAllBytes(configTemp, config);
            File.Move(weightsTemp, weightsPath, overwrite: true);
            File.Move(configTemp, configPath, overwrite: true);
        }
        catch
        {
            IO.AtomicFile.TryDelete(weightsTemp);
            IO.AtomicFile.TryDelete(configTemp);
            throw;
        }
    }

    /// <summary>Opens the weights file of <paramref name="folder"/>.</summary>
    public static IO.SafetensorsFile OpenWeights(string folder)
    {
        string weightsPath = Path.Combine(folder, PeftAdapterFile.WeightsFileName);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"No {PeftAdapterFile.WeightsFileName} in {folder}.", weightsPath);
        return IO.SafetensorsFile.Open(weightsPath);
    }
}
