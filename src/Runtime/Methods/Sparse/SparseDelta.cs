using System.Runtime.InteropServices;
using PeftGen.IO;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.Sparse;

/// <summary>The sparse change of one parameter: flat row-major indices (strictly ascending) and the values added there.</summary>
/// <param name="Path">Parameter path, e.g. model.layers.0.mlp.down_proj.weight.</param>
/// <param name="Shape">The full parameter's shape.</param>
/// <param name="Indices">Flat row-major indices into the parameter, strictly ascending.</param>
/// <param name="Values">The change at each index.</param>
public sealed record SparseDeltaTensor(string Path, IReadOnlyList<int> Shape, long[] Indices, float[] Values);

/// <summary>
/// The result of sparse fine-tuning: per parameter, the entries that changed and by how much. Saved as safetensors
/// (PeftGen's own format; metadata <c>{"format": "pt", "peftgen_type": "SPARSE_DELTA", "peftgen_format": "1"}</c>) with
/// three tensors per parameter P: <c>base_model.model.P.indices</c> (I64 [k], flat row-major, strictly ascending),
/// <c>base_model.model.P.values</c> (F32 [k]) and <c>base_model.model.P.shape</c> (I64 [rank], the parameter's shape).
/// Applying it adds the values at the indices: W[idx] += scale · values.
/// </summary>
public sealed class SparseDelta
{
    /// <summary>The <c>peftgen_type</c> metadata value of a sparse delta file.</summary>
    public const string FileType = "SPARSE_DELTA";

    private const string KeyPrefix = "base_model.model.";
    private const string IndicesSuffix = ".indices";
    private const string ValuesSuffix = ".values";
    private const string ShapeSuffix = ".shape";

    /// <summary>Creates a delta, checking every tensor's indices against its shape.</summary>
    /// <exception cref="ArgumentException">Paths repeat, counts differ, or indices are out of range or not strictly ascending.</exception>
    public SparseDelta(IReadOnlyList<SparseDeltaTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            ArgumentNullException.ThrowIfNull(t);
            if (!seen.Add(t.Path)) throw new ArgumentException($"Sparse delta names parameter '{t.Path}' twice.", nameof(tensors));
            if (Check(t) is { } problem) throw new ArgumentException($"Sparse delta for '{t.Path}': {problem}.", nameof(tensors));
        }
        Tensors = tensors.ToArray();
    }

    /// <summary>The changed parameters.</summary>
    public IReadOnlyList<SparseDeltaTensor> Tensors { get; }

    /// <summary>Changed entries in all.</summary>
    public long Count => Tensors.Sum(t => (long)t.Indices.Length);

    /// <summary>
    /// Adds <paramref name="scale"/> · values at the indices of the parameters of <paramref name="model"/> (−1 takes a
    /// delta back out). Nothing changes when a parameter is missing or has another shape.
    /// </summary>
    /// <exception cref="InvalidDataException">A parameter is missing, has another shape, or is not float32; all are listed.</exception>
    public void ApplyTo(Module model, float scale = 1f)
    {
        ArgumentNullException.ThrowIfNull(model);
        var parameters = model.StateDict();
        var problems = new List<string>();
        foreach (var t in Tensors)
        {
            if (!parameters.TryGetValue(t.Path, out var p)) problems.Add($"'{t.Path}' is not a parameter of {model.GetType().Name}");
            else if (!p.Shape.SequenceEqual(t.Shape.ToArray())) problems.Add($"'{t.Path}' is {ShapeUtil.Format(p.Shape)} in the model, {ShapeUtil.Format(t.Shape.ToArray())} in the delta");
            else if (p.DType != DType.Float32 || !p.IsContiguous) problems.Add($"'{t.Path}' is {p.DType}{(p.IsContiguous ? "" : ", strided")}; a delta applies to dense float32 parameters");
        }
        if (problems.Count > 0) throw new InvalidDataException($"The sparse delta does not fit the model ({problems.Count} problems): {string.Join("; ", problems)}.");
        foreach (var t in Tensors)
        {
            var data = parameters[t.Path].AsSpan();
            for (int i = 0; i < t.Indices.Length; i++) data[(int)t.Indices[i]] += scale * t.Values[i];
        }
    }

    /// <summary>Writes the delta to <paramref name="path"/> atomically (a temporary file renamed into place).</summary>
    public void Save(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var entries = new List<SafetensorsEntry>();
        foreach (var t in Tensors)
        {
            string key = KeyPrefix + t.Path;
            entries.Add(SafetensorsEntry.FromInt64(key + IndicesSuffix, t.Indices));                          // I64 [k]
            entries.Add(SafetensorsEntry.FromFloat32(key + ValuesSuffix, t.Values));                          // F32 [k]
            entries.Add(SafetensorsEntry.FromInt64(key + ShapeSuffix, t.Shape.Select(d => (long)d).ToArray())); // I64 [rank]
        }
        Safetensors.Save(path, entries, new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["peftgen_format"] = "1",
            ["peftgen_type"] = FileType,
        });
    }

    /// <summary>Reads a delta written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a sparse delta or its tensors are inconsistent; the message names the key.</exception>
    /// <exception cref="SafetensorsFormatException">The file breaks the safetensors format.</exception>
    public static SparseDelta Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var file = SafetensorsFile.Open(path);
        if (!file.Metadata.TryGetValue("peftgen_type", out var type) || type != FileType)
            throw new InvalidDataException($"{path}: not a sparse delta (metadata \"peftgen_type\" is {(type == null ? "missing" : $"\"{type}\"")}, expected \"{FileType}\").");
        var names = new HashSet<string>(file.TensorNames, StringComparer.Ordinal);
        var tensors = new List<SparseDeltaTensor>();
        foreach (var key in file.TensorNames.Where(n => n.EndsWith(IndicesSuffix, StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            string stem = key[..^IndicesSuffix.Length];
            if (!stem.StartsWith(KeyPrefix, StringComparison.Ordinal))
                throw new InvalidDataException($"{path}: key '{key}' does not start with '{KeyPrefix}'.");
            foreach (var suffix in (string[])[ValuesSuffix, ShapeSuffix])
                if (!names.Contains(stem + suffix)) throw new InvalidDataException($"{path}: '{key}' has no '{stem + suffix}'.");
            names.Remove(key);
            names.Remove(stem + ValuesSuffix);
            names.Remove(stem + ShapeSuffix);
            var indices = ReadInt64(file, key);
            var shape = ReadInt64(file, stem + ShapeSuffix);
            var valuesInfo = file.GetInfo(stem + ValuesSuffix);
            if (valuesInfo.Shape.Length != 1 || valuesInfo.DType == null)
                throw new InvalidDataException($"{path}: '{stem + ValuesSuffix}' must be a vector of F32, BF16 or F16, found {valuesInfo.DTypeName} {ShapeUtil.Format(valuesInfo.Shape)}.");
            using var values = file.ReadTensor(stem + ValuesSuffix);
            if (shape.Any(d => d < 0 || d > int.MaxValue))
                throw new InvalidDataException($"{path}: '{stem + ShapeSuffix}' holds an impossible dimension ({string.Join(", ", shape)}).");
            var tensor = new SparseDeltaTensor(stem[KeyPrefix.Length..], shape.Select(d => (int)d).ToArray(), indices, values.ToArray());
            if (Check(tensor) is { } problem) throw new InvalidDataException($"{path}: '{stem}': {problem}.");
            tensors.Add(tensor);
        }
        if (names.Count > 0)
            throw new InvalidDataException($"{path}: keys without a matching '{IndicesSuffix}' tensor: {string.Join(", ", names.Order(StringComparer.Ordinal))}.");
        return new SparseDelta(tensors);
    }

    private static long[] ReadInt64(SafetensorsFile file, string key)
    {
        var info = file.GetInfo(key);
        if (info.DTypeName != "I64" || info.Shape.Length != 1)
            throw new InvalidDataException($"{file.FilePath}: '{key}' must be an I64 vector, found {info.DTypeName} {ShapeUtil.Format(info.Shape)}.");
        var result = new long[info.Shape[0]];
        using var stream = new FileStream(file.FilePath, FileMode.Open, FileAccess.Read, FileShare.Read);
        stream.Seek(file.DataStart + info.Begin, SeekOrigin.Begin);
        stream.ReadExactly(MemoryMarshal.AsBytes(result.AsSpan()));
        return result;
    }

    /// <summary>Why <paramref name="t"/> is inconsistent, or null.</summary>
    private static string? Check(SparseDeltaTensor t)
    {
        if (t.Shape.Any(d => d < 0)) return $"shape {ShapeUtil.Format(t.Shape.ToArray())} has a negative dimension";
        if (t.Indices.Length != t.Values.Length) return $"{t.Indices.Length} indices but {t.Values.Length} values";
        long count = t.Shape.Aggregate(1L, (a, d) => a * d);
        for (int i = 0; i < t.Indices.Length; i++)
        {
            if (t.Indices[i] < 0 || t.Indices[i] >= count) return $"index {t.Indices[i]} at position {i} is outside [0, {count})";
            if (i > 0 && t.Indices[i] <= t.Indices[i - 1]) return $"indices must be strictly ascending; position {i} holds {t.Indices[i]} after {t.Indices[i - 1]}";
        }
        return null;
    }
}
