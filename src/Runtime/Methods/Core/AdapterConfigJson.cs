using System.Text.Json;

namespace PeftGen.Methods;

/// <summary>
/// Reading and writing helpers for PEFT's <c>adapter_config.json</c>: size and UTF-8 checks, typed getters whose errors
/// name the file and the key, and the keys every format writes alike. The folder itself is <see cref="AdapterFolder"/>'s.
/// </summary>
internal static class AdapterConfigJson
{
    private const long MaxConfigBytes = 16 << 20;

    /// <summary>
    /// Reads <paramref name="path"/> (at most 16 MiB of UTF-8) as a JSON object; the caller disposes the document.
    /// <paramref name="what"/> names the file in the not-found message.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is too large, not UTF-8, not JSON or not an object.</exception>
    public static JsonDocument Parse(string path, string what = "PEFT adapter config")
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"{what} not found: {path}", path);
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
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = document.RootElement.ValueKind;
            document.Dispose();
            throw new InvalidDataException($"{path}: the config must be a JSON object, found {kind}.");
        }
        return document;
    }

    /// <summary>Parses the config file and checks its "peft_type" is <paramref name="peftTypes"/>; returns the root object.</summary>
    public static JsonDocument Open(string path, params string[] peftTypes)
    {
        var document = Parse(path);
        var root = document.RootElement;
        try
        {
            string? peftType = GetString(path, root, "peft_type");
            if (peftType == null || !peftTypes.Contains(peftType, StringComparer.Ordinal))
                throw new InvalidDataException($"{path}: peft_type is {(peftType == null ? "missing" : $"\"{peftType}\"")}; this loader reads {string.Join(", ", peftTypes.Select(t => $"\"{t}\""))}.");
            RejectModulesToSave(path, root, "other");
            return document;
        }
        catch
        {
            document.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads a config: parses <paramref name="path"/>, builds the config with <paramref name="parse"/> and validates it
    /// with <paramref name="validate"/>; a rejected setting becomes an <see cref="InvalidDataException"/> naming the file.
    /// </summary>
    public static T Read<T>(string path, Func<JsonElement, T> parse, Action<T> validate, string what = "PEFT adapter config")
    {
        using var document = Parse(path, what);
        try
        {
            var config = parse(document.RootElement);
            validate(config);
            return config;
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>Rejects a non-empty modules_to_save (full copies of <paramref name="modules"/> modules), which no loader supports.</summary>
    public static void RejectModulesToSave(string path, JsonElement root, string modules)
    {
        if (root.TryGetProperty("modules_to_save", out var toSave) && toSave.ValueKind == JsonValueKind.Array && toSave.GetArrayLength() > 0)
            throw new InvalidDataException($"{path}: modules_to_save (full copies of {modules} modules) is not supported.");
    }

    /// <summary>Rejects fan_in_fan_out = true: Conv1D weights stored [in, out], which Llama linears never are.</summary>
    public static void RejectFanInFanOut(string path, JsonElement root)
    {
        if (GetBool(path, root, "fan_in_fan_out") == true)
            throw new InvalidDataException($"{path}: fan_in_fan_out = true (Conv1D weights stored [in, out]) is not supported; Llama linears are [out, in].");
    }

    /// <summary>A string value, or null when the key is absent or null.</summary>
    public static string? GetString(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : throw new InvalidDataException($"{path}: {key} must be a string, found {v.ValueKind}.");

    /// <summary>A true/false value, or null when the key is absent or null.</summary>
    public static bool? GetBool(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
        : throw new InvalidDataException($"{path}: {key} must be true or false, found {v.ValueKind}.");

    /// <summary>An integer value, or null when the key is absent or null.</summary>
    public static int? GetInt(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null : ToInt(path, v, key);

    /// <summary>A JSON integer, or an error naming the file and key.</summary>
    public static int ToInt(string path, JsonElement v, string key) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
        : throw new InvalidDataException($"{path}: {key} must be an integer, found {v}.");

    /// <summary>A number value as float, or null when the key is absent or null.</summary>
    public static float? GetFloat(string path, JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null : ToFloat(path, v, key);

    /// <summary>
    /// A JSON number as a finite float, or an error naming the file and key: a value beyond float's range (1e309, 1e39)
    /// would otherwise become infinity and pass range checks such as "&gt; 0".
    /// </summary>
    public static float ToFloat(string path, JsonElement v, string key)
    {
        if (v.ValueKind != JsonValueKind.Number) throw new InvalidDataException($"{path}: {key} must be a number, found {v.ValueKind}.");
        if (!v.TryGetDouble(out double d) || !double.IsFinite(d) || !float.IsFinite((float)d))
            throw new InvalidDataException($"{path}: {key} = {v.GetRawText()} is out of range: it must be a finite number within ±3.4e38; fix {key} in the file.");
        return (float)d;
    }

    /// <summary>exclude_modules: a list of names, empty when absent (PEFT's regular-expression form is rejected).</summary>
    public static IReadOnlyList<string> GetExclude(string path, JsonElement root)
    {
        if (!root.TryGetProperty("exclude_modules", out var value) || value.ValueKind == JsonValueKind.Null) return [];
        if (value.ValueKind == JsonValueKind.String)
            throw new InvalidDataException($"{path}: exclude_modules as a regular expression is not supported; list the module names instead.");
        return StringList(path, value, "exclude_modules");
    }

    /// <summary>layers_to_transform: null (every layer), one integer or a list of integers.</summary>
    public static IReadOnlyList<int>? GetLayers(string path, JsonElement root, bool allowSingle = true)
    {
        if (!root.TryGetProperty("layers_to_transform", out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (allowSingle && value.ValueKind == JsonValueKind.Number) return [ToInt(path, value, "layers_to_transform")];
        if (value.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException(allowSingle
                ? $"{path}: layers_to_transform must be null, an integer or a list of integers, found {value.ValueKind}."
                : $"{path}: layers_to_transform must be null or a list of integers, found {value.ValueKind}.");
        return value.EnumerateArray().Select(v => allowSingle ? ToInt(path, v, "layers_to_transform")
            : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
            : throw new InvalidDataException($"{path}: layers_to_transform must hold integers, found {v}.")).ToList();
    }

    /// <summary>A name → number object (rank_pattern, alpha_pattern), empty when absent.</summary>
    public static Dictionary<string, T> GetPattern<T>(string path, JsonElement root, string key, Func<JsonElement, T?> read) where T : struct
    {
        var result = new Dictionary<string, T>(StringComparer.Ordinal);
        if (!root.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null) return result;
        if (value.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: {key} must be an object, found {value.ValueKind}.");
        foreach (var entry in value.EnumerateObject())
            result[entry.Name] = (entry.Value.ValueKind == JsonValueKind.Number ? read(entry.Value) : null)
                ?? throw new InvalidDataException($"{path}: {key}['{entry.Name}'] must be a number, found {entry.Value}.");
        return result;
    }

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

    /// <summary>A JSON list of strings, or an error naming the file and key.</summary>
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

    /// <summary>The keys every PeftGen-written config starts with: peft_type, task_type and base_model_name_or_path.</summary>
    public static void WriteHeader(Utf8JsonWriter w, string peftType, string? baseModel)
    {
        w.WriteString("peft_type", peftType);
        w.WriteString("task_type", "CAUSAL_LM");
        if (baseModel == null) w.WriteNull("base_model_name_or_path");
        else w.WriteString("base_model_name_or_path", baseModel);
    }

    /// <summary>A list of names, or null when it is empty (PEFT's exclude_modules).</summary>
    public static void WriteNamesOrNull(Utf8JsonWriter w, string key, IReadOnlyList<string> names)
    {
        w.WritePropertyName(key);
        if (names.Count == 0) w.WriteNullValue();
        else
        {
            w.WriteStartArray();
            foreach (var name in names) w.WriteStringValue(name);
            w.WriteEndArray();
        }
    }

    /// <summary>A list of integers, or null (PEFT's layers_to_transform).</summary>
    public static void WriteIntsOrNull(Utf8JsonWriter w, string key, IReadOnlyList<int>? values)
    {
        w.WritePropertyName(key);
        if (values == null) w.WriteNullValue();
        else
        {
            w.WriteStartArray();
            foreach (int i in values) w.WriteNumberValue(i);
            w.WriteEndArray();
        }
    }

    /// <summary>The last component of a module path (what PEFT records in target_modules).</summary>
    public static string Leaf(string path) => path[(path.LastIndexOf('.') + 1)..];
}
