using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>
/// Writing safetensors files (the Hugging Face tensor format: an 8-byte little-endian header length, a JSON header,
/// then the raw little-endian row-major data) and facts about its dtypes. Read files with <see cref="SafetensorsFile"/>.
/// </summary>
public static class Safetensors
{
    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/>. The header lists tensors sorted by name, is
    /// right-padded with spaces so the data starts 8-byte aligned, and the data follows contiguously in header order.
    /// Each tensor is stored as <paramref name="storeAs"/> (its own dtype when null). The write is atomic: the bytes go
    /// to a temporary file in the same folder, are flushed to disk, and only then replace <paramref name="path"/>; a
    /// failure deletes the temporary file and leaves an existing file untouched.
    /// </summary>
    /// <exception cref="ArgumentException">A name repeats, is empty or is "__metadata__".</exception>
    /// <exception cref="ObjectDisposedException">A tensor was disposed.</exception>
    public static void Save(string path, IEnumerable<(string Name, Tensor Tensor)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null, DType? storeAs = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        Save(path, tensors.Select(t => SafetensorsEntry.FromTensor(t.Name, t.Tensor, storeAs)).ToList(), metadata);
    }

    /// <summary>
    /// Writes <paramref name="entries"/> (runtime tensors and integer or float arrays, see <see cref="SafetensorsEntry"/>)
    /// to <paramref name="path"/>, exactly as <see cref="Save(string, IEnumerable{ValueTuple{string, Tensor}}, IReadOnlyDictionary{string, string}?, DType?)"/>
    /// does: sorted by name, 8-byte aligned data, written atomically (through a <see cref="SafetensorsWriter"/>).
    /// </summary>
    /// <exception cref="ArgumentException">A name repeats, is empty or is "__metadata__".</exception>
    /// <exception cref="ObjectDisposedException">A tensor was disposed.</exception>
    public static void Save(string path, IEnumerable<SafetensorsEntry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(entries);

        // The writer checks names before the file exists and each tensor as it writes it; any failure deletes the temporary file.
        var list = entries.ToList();
        using var writer = SafetensorsWriter.Create(path, list.Select(e => e.Spec), metadata);
        var byName = list.ToDictionary(e => e.Name, StringComparer.Ordinal);
        foreach (var spec in writer.Tensors)
        {
            var entry = byName[spec.Name];
            if (entry.Tensor is { } tensor) writer.Write(spec.Name, tensor);
            else writer.Write(spec.Name, entry.ArrayBytes);
        }
        writer.Commit();
    }

    /// <summary>The runtime dtype of a safetensors dtype string (F32, BF16, F16), or null for types this library does not compute with.</summary>
    public static DType? ToDType(string dtypeName) => dtypeName switch
    {
        "F32" => DType.Float32,
        "BF16" => DType.BFloat16,
        "F16" => DType.Float16,
        _ => null,
    };

    /// <summary>Bytes per element of a safetensors dtype string, or null when the format does not define it.</summary>
    public static int? ElementSize(string dtypeName) => dtypeName switch
    {
        "BOOL" or "U8" or "I8" or "F8_E5M2" or "F8_E4M3" => 1,
        "I16" or "U16" or "F16" or "BF16" => 2,
        "I32" or "U32" or "F32" => 4,
        "F64" or "I64" or "U64" => 8,
        _ => null,
    };
}
