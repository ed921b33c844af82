using System.Runtime.InteropServices;
using System.Text.Json;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>
/// Writing safetensors files (the Hugging Face tensor format: an 8-byte little-endian header length, a JSON header,
/// then the raw little-endian row-major data) and facts about its dtypes. Read files with <see cref="SafetensorsFile"/>.
/// </summary>
public static unsafe class Safetensors
{
    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/>. The header lists tensors sorted by name, is
    /// right-padded with spaces so the data starts 8-byte aligned, and the data follows contiguously in header order.
    /// Each tensor is stored as <paramref name="storeAs"/> (its own dtype when null). The write is atomic: the bytes go
    /// to a temporary file in the same folder, are flushed to disk, and only then replace <paramref name="path"/>; a
    /// failure deletes the temporary file and leaves an existing file untouched.
    /// </summary>
    /// <exception cref="ArgumentException">A name repeats, is empty or is "__metadata__", or a tensor is not on the CPU.</exception>
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
    /// does: sorted by name, 8-byte aligned data, written atomically.
    /// </summary>
    /// <exception cref="ArgumentException">A name repeats, is empty or is "__metadata__", or a tensor is not on the CPU.</exception>
    /// <exception cref="ObjectDisposedException">A tensor was disposed.</exception>
    public static void Save(string path, IEnumerable<SafetensorsEntry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(entries);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors data is little-endian; this machine is big-endian.");

        // Everything that can be checked is checked before a byte is written, so bad input leaves no file at all.
        var sorted = entries.OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
        for (int i = 0; i < sorted.Count; i++)
        {
            var entry = sorted[i];
            string name = entry.Name;
            if (string.IsNullOrEmpty(name) || name == "__metadata__")
                throw new ArgumentException($"Saving {path}: '{name}' cannot name a tensor.", nameof(entries));
            if (i > 0 && sorted[i - 1].Name == name)
                throw new ArgumentException($"Saving {path}: tensor name '{name}' appears twice.", nameof(entries));
            if (entry.Tensor is not { } tensor) continue;
            if (tensor.IsDisposed) throw new ObjectDisposedException($"Saving {path}: tensor '{name}' was disposed.");
            if (tensor.Device.Type != DeviceType.Cpu)
                throw new ArgumentException($"Saving {path}: tensor '{name}' is on {tensor.Device}; copy it to the CPU first.", nameof(entries));
        }
        var header = BuildHeader(sorted, metadata);

        string full = Path.GetFullPath(path);
        string temp = AtomicFile.TempPathFor(full);
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> length = stackalloc byte[8];
                BitConverter.TryWriteBytes(length, (ulong)header.Length);
                stream.Write(length);
                stream.Write(header);
                foreach (var entry in sorted)
                {
                    if (entry.Tensor is { } tensor) WriteData(stream, tensor, entry.StoreAs ?? tensor.DType);
                    else stream.Write(entry.ArrayBytes);
                }
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            AtomicFile.TryDelete(temp);
            throw;
        }
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

    private static byte[] BuildHeader(List<SafetensorsEntry> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata.OrderBy(m => m.Key, StringComparer.Ordinal)) writer.WriteString(key, value);
                writer.WriteEndObject();
            }
            long offset = 0;
            foreach (var entry in entries)
            {
                long end = offset + entry.ByteLength;
                writer.WriteStartObject(entry.Name);
                writer.WriteString("dtype", entry.DTypeName);
                writer.WriteStartArray("shape");
                foreach (long d in entry.Shape) writer.WriteNumberValue(d);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(end);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset = end;
            }
            writer.WriteEndObject();
        }
        // Pad so that 8 + header length is a multiple of 8: readers may then map the data with aligned pointers.
        while (buffer.Length % 8 != 0) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    private static void WriteData(FileStream stream, Tensor tensor, DType dtype)
    {
        if (tensor.IsContiguous && tensor.DType == dtype)
        {
            byte* p = tensor.RawData;
            long bytes = tensor.Count * dtype.ElementSize();
            for (long done = 0; done < bytes; done += 1 << 30)
                stream.Write(new ReadOnlySpan<byte>(p + done, (int)Math.Min(1 << 30, bytes - done)));
            return;
        }
        // Strided views and dtype changes go through a dense float32 copy, converted on the way out.
        var values = tensor.ToArray();
        if (dtype == DType.Float32)
        {
            stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
            return;
        }
        var narrow = new ushort[values.Length];
        Float16Conversions.Narrow(values, narrow, dtype);
        stream.Write(MemoryMarshal.AsBytes(narrow.AsSpan()));
    }
}
