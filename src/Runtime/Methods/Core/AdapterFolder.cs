using PeftGen.IO;
using PeftGen.Tensors;

namespace PeftGen.Methods;

/// <summary>
/// What every adapter folder format shares: the <c>base_model.model.</c> key prefix, the atomic write of
/// <c>adapter_model.safetensors</c> (metadata <c>{"format": "pt"}</c>) and <c>adapter_config.json</c>, opening the
/// weights, comparing their keys and shapes with what the model expects (listing every mismatch at once), and the
/// q/k feature order of interleaved-RoPE models (<see cref="RopeOrder"/>): files are written in Hugging Face's order
/// and read back into the model's.
/// </summary>
internal static class AdapterFolder
{
    /// <summary>The prefix PEFT puts before a module path in a file key.</summary>
    public const string KeyPrefix = "base_model.model.";

    /// <summary>Name of the adapter configuration file.</summary>
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>Name of the adapter weights file.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>Decides, for a key and its shape, how its values reorder between a model and its file (null: not at all).</summary>
    public delegate Reorder? Reordering(RopeOrder rope, string key, IReadOnlyList<int> shape);

    /// <summary>The file key of <paramref name="path"/> with <paramref name="suffix"/>: <c>base_model.model.&lt;path&gt;&lt;suffix&gt;</c>.</summary>
    public static string Key(string path, string suffix = "") => KeyPrefix + path + suffix;

    /// <summary>
    /// Writes <c>adapter_model.safetensors</c> (<paramref name="metadata"/>, by default <c>{"format": "pt"}</c>) and
    /// <c>adapter_config.json</c> into <paramref name="folder"/> (created when missing): both in full under temporary
    /// names first, then renamed into place. With <paramref name="rope"/>, the tensors <paramref name="reorder"/>
    /// names are written in Hugging Face's q/k order.
    /// </summary>
    public static void Write(string folder, IEnumerable<(string Key, Tensor Tensor)> tensors, byte[] config,
        RopeOrder? rope = null, Reordering? reorder = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        Directory.CreateDirectory(folder);
        string weightsPath = Path.Combine(folder, WeightsFileName), configPath = Path.Combine(folder, ConfigFileName);
        string weightsTemp = AtomicFile.TempPathFor(weightsPath), configTemp = AtomicFile.TempPathFor(configPath);
        try
        {
            SaveWeights(weightsTemp, tensors, metadata ?? new Dictionary<string, string> { ["format"] = "pt" }, rope, reorder);
            AtomicFile.WriteAllBytes(configTemp, config);
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

    /// <summary>Writes one safetensors file atomically, the tensors <paramref name="reorder"/> names in Hugging Face's q/k order.</summary>
    public static void SaveWeights(string path, IEnumerable<(string Key, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string> metadata,
        RopeOrder? rope, Reordering? reorder)
    {
        var owned = new List<Tensor>();
        try
        {
            var stored = new List<(string, Tensor)>();
            foreach (var (key, tensor) in tensors)
            {
                var order = rope != null && reorder != null ? reorder(rope, key, tensor.ShapeArray) : null;
                var value = order?.ToFile(tensor) ?? tensor;
                if (order != null) owned.Add(value);
                stored.Add((key, value));
            }
            Safetensors.Save(path, stored, metadata);
        }
        finally
        {
            foreach (var t in owned) t.Dispose();
        }
    }

    /// <summary>Opens <c>adapter_model.safetensors</c> of <paramref name="folder"/>, its values in the model's q/k order (see <see cref="Open"/>).</summary>
    /// <exception cref="FileNotFoundException">The folder has no weights file.</exception>
    public static SafetensorsFile OpenWeights(string folder, RopeOrder? rope = null, Reordering? reorder = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        string weightsPath = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"No {WeightsFileName} in {folder}.", weightsPath);
        return Open(weightsPath, rope, reorder);
    }

    /// <summary>
    /// Opens a safetensors file. With <paramref name="rope"/>, the float tensors <paramref name="reorder"/> names are
    /// put back into the model's q/k order in this reader's private copy-on-write mapping (the file is untouched), so
    /// every later read returns them ready for the model.
    /// </summary>
    public static SafetensorsFile Open(string path, RopeOrder? rope = null, Reordering? reorder = null)
    {
        var file = SafetensorsFile.Open(path);
        if (rope == null || reorder == null) return file;
        try
        {
            foreach (var key in file.TensorNames)
            {
                var info = file.GetInfo(key);
                if (info.DType is not { } dtype || reorder(rope, key, info.Shape) is not { } order) continue;
                order.ToModel(file.MappedBytes(key), dtype.ElementSize());
            }
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Compares the keys and shapes of <paramref name="file"/> with <paramref name="expected"/> and adds a line to
    /// <paramref name="problems"/> for every key nothing expects (<paramref name="other"/> may still accept it with a
    /// shape), every shape that differs, every non-float dtype and every expected key that is missing.
    /// </summary>
    public static void CompareKeys(SafetensorsFile file, IReadOnlyDictionary<string, int[]> expected, List<string> problems,
        Func<string, SafetensorsTensorInfo, int[]?>? other = null, string unmatched = "matches no layer the config adapts",
        string missingNote = " (its layer is targeted)")
    {
        foreach (var key in file.TensorNames)
        {
            var info = file.GetInfo(key);
            int[]? shape = expected.TryGetValue(key, out var s) ? s : other?.Invoke(key, info);
            if (shape == null)
                problems.Add($"key '{key}' {ShapeUtil.Format(info.Shape)} {unmatched}");
            else if (!info.Shape.AsSpan().SequenceEqual(shape))
                problems.Add($"key '{key}': expected {ShapeUtil.Format(shape)}, found {ShapeUtil.Format(info.Shape)}");
            else if (info.DType == null)
                problems.Add($"key '{key}' is stored as {info.DTypeName}; adapter weights must be F32, BF16 or F16");
            else ThrowIfNotFinite(file, key, info);
        }
        foreach (var (key, shape) in expected)
            if (!file.Contains(key)) problems.Add($"key '{key}' {ShapeUtil.Format(shape)} is missing{missingNote}");
    }

    /// <summary>Throws one exception listing the problems (the first 10, then how many more), when there are any.</summary>
    /// <exception cref="InvalidDataException">There are problems; the message names <paramref name="filePath"/>.</exception>
    public static void ThrowIfAny(string filePath, List<string> problems)
    {
        const int Listed = 10;
        if (problems.Count > 0)
            throw new InvalidDataException($"{filePath} does not fit the model ({problems.Count} mismatches): {string.Join("; ", problems.Take(Listed))}"
                + (problems.Count > Listed ? $"; and {problems.Count - Listed:N0} more." : "."));
    }

    /// <summary>
    /// Refuses a stored float tensor holding NaN or infinity (a diverged or corrupt adapter), which would otherwise
    /// reach sampling or a merged model. One pass over the stored bytes of each tensor, no copy.
    /// </summary>
    /// <exception cref="InvalidDataException">The tensor holds a non-finite value; the message names the file and tensor.</exception>
    public static void ThrowIfNotFinite(SafetensorsFile file, string key, SafetensorsTensorInfo info)
    {
        var bytes = file.MappedBytes(key);
        long bad = -1;
        switch (info.DTypeName)
        {
            case "F32":
                bad = IndexOfNonFinite(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes));
                break;
            case "F16":
                var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes);
                for (int i = 0; i < halves.Length && bad < 0; i++) if ((halves[i] & 0x7C00) == 0x7C00) bad = i;
                break;
            case "BF16":
                var brains = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes);
                for (int i = 0; i < brains.Length && bad < 0; i++) if ((brains[i] & 0x7F80) == 0x7F80) bad = i;
                break;
        }
        if (bad >= 0)
            throw new InvalidDataException(
                $"{file.FilePath}: tensor '{key}' holds non-finite values (NaN or infinity; the first at element {bad:N0}): the adapter is corrupt or its training diverged; use an earlier checkpoint or retrain.");
    }

    private static long IndexOfNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++) if (!float.IsFinite(values[i])) return i;
        return -1;
    }

    /// <summary>Runs <paramref name="addAdapter"/>, reporting an invalid config as bad data in <paramref name="configPath"/>.</summary>
    /// <exception cref="InvalidDataException">The adapter could not be added; the message names the config file.</exception>
    public static void AddFromConfig(string configPath, Action addAdapter)
    {
        try
        {
            addAdapter();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{configPath}: {e.Message}", e);
        }
    }
}
