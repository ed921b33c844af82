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
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors data is little-endian; this machine is big-endian.");

        // Everything that can be checked is checked before a byte is written, so bad input leaves no file at all.
        var entries = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        for (int i = 0; i < entries.Count; i++)
        {
            var (name, tensor) = entries[i];
            if (string.IsNullOrEmpty(name) || name == "__metadata__")
                throw new ArgumentException($"Saving {path}: '{name}' cannot name a tensor.", nameof(tensors));
            if (i > 0 && entries[i - 1].Name == name)
                throw new ArgumentException($"Saving {path}: tensor name '{name}' appears twice.", nameof(tensors));
            ArgumentNullException.ThrowIfNull(tensor, $"tensors['{name}']");
            if (tensor.IsDisposed) throw new ObjectDisposedException($"Saving {path}: tensor '{name}' was disposed.");
            if (tensor.Device.Type != DeviceType.Cpu)
                throw new ArgumentException($"Saving {path}: tensor '{name}' is on {tensor.Device}; copy it to the CPU first.", nameof(tensors));
        }
        var header = BuildHeader(entries, metadata, storeAs);

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
                foreach (var (_, tensor) in entries) WriteData(stream, tensor, storeAs ?? tensor.DType);
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

    private static byte[] BuildHeader(List<(string Name, Tensor Tensor)> entries, IReadOnlyDictionary<string, string>? metadata, DType? storeAs)
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
            foreach (var (name, tensor) in entries)
            {
                var dtype = storeAs ?? tensor.DType;
                long end = offset + tensor.Count * dtype.ElementSize();
                writer.WriteStartObject(name);
                writer.WriteString("dtype", dtype.SafetensorsName());
                writer.WriteStartArray("shape");
                foreach (int d in tensor.Shape) writer.WriteNumberValue(d);
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
