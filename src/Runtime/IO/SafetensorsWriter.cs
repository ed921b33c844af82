using System.Runtime.InteropServices;
using System.Text.Json;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>One tensor announced to a <see cref="SafetensorsWriter"/>: its name, safetensors dtype and shape.</summary>
/// <param name="Name">The tensor's name in the file.</param>
/// <param name="DTypeName">The safetensors dtype it is stored as (F32, BF16, F16, I64, …).</param>
/// <param name="Shape">Dimensions, outermost first.</param>
public sealed record SafetensorsTensorSpec(string Name, string DTypeName, IReadOnlyList<long> Shape)
{
    /// <summary>Bytes of data the tensor occupies in the file.</summary>
    /// <exception cref="ArgumentException">The dtype is not one the format defines, or a dimension is negative.</exception>
    public long ByteLength
    {
        get
        {
            long size = Safetensors.ElementSize(DTypeName)
                ?? throw new ArgumentException($"Tensor '{Name}': '{DTypeName}' is not a safetensors dtype.");
            foreach (long d in Shape)
            {
                if (d < 0) throw new ArgumentException($"Tensor '{Name}': shape [{string.Join(", ", Shape)}] has a negative dimension.");
                size = checked(size * d);
            }
            return size;
        }
    }

    /// <summary>A spec for a float tensor of <paramref name="shape"/> stored as <paramref name="dtype"/>.</summary>
    public static SafetensorsTensorSpec Of(string name, DType dtype, IReadOnlyList<int> shape) =>
        new(name, dtype.SafetensorsName(), [.. shape.Select(d => (long)d)]);
}

/// <summary>
/// Writes a safetensors file one tensor at a time, so a checkpoint far larger than memory can be produced while
/// holding one tensor: the header is computed up front from the announced (name, dtype, shape) list (sorted by name,
/// right-padded with spaces so the data starts 8-byte aligned, as <see cref="Safetensors.Save(string, IEnumerable{SafetensorsEntry}, IReadOnlyDictionary{string, string}?)"/>
/// writes it), then each tensor's data is written in header order (<see cref="Next"/>) into a temporary file beside
/// the target; <see cref="Commit"/> flushes it to disk and renames it over the target. Every write is checked against
/// the announced name and byte count. Disposing a writer that was not committed (after an exception, a cancellation,
/// or a forgotten tensor) deletes the temporary file, so the target is never partial and an existing file at the
/// target stays as it was. Not thread-safe.
/// </summary>
public sealed unsafe class SafetensorsWriter : IDisposable
{
    private readonly List<SafetensorsTensorSpec> _tensors;
    private readonly string _temp;
    private FileStream? _stream;
    private int _next;
    private bool _failed;
    private bool _committed;

    private SafetensorsWriter(string path, string temp, List<SafetensorsTensorSpec> tensors, FileStream stream)
    {
        FilePath = path;
        _temp = temp;
        _tensors = tensors;
        _stream = stream;
    }

    /// <summary>The target file (full path).</summary>
    public string FilePath { get; }

    /// <summary>The announced tensors in header (and data) order: sorted by name.</summary>
    public IReadOnlyList<SafetensorsTensorSpec> Tensors => _tensors;

    /// <summary>The tensor to write next, or null when all have been written.</summary>
    public SafetensorsTensorSpec? Next => _next < _tensors.Count ? _tensors[_next] : null;

    /// <summary>
    /// Checks the announced tensors, creates the temporary file beside <paramref name="path"/> and writes the header.
    /// Nothing exists on disk when this throws.
    /// </summary>
    /// <exception cref="ArgumentException">A name repeats, is empty or is "__metadata__", a dtype is unknown, or a dimension is negative.</exception>
    public static SafetensorsWriter Create(string path, IEnumerable<SafetensorsTensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors data is little-endian; this machine is big-endian.");
        var sorted = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        for (int i = 0; i < sorted.Count; i++)
        {
            string name = sorted[i].Name;
            if (string.IsNullOrEmpty(name) || name == "__metadata__")
                throw new ArgumentException($"Saving {path}: '{name}' cannot name a tensor.", nameof(tensors));
            if (i > 0 && sorted[i - 1].Name == name)
                throw new ArgumentException($"Saving {path}: tensor name '{name}' appears twice.", nameof(tensors));
        }
        var header = BuildHeader(sorted, metadata);

        string full = Path.GetFullPath(path);
        string temp = AtomicFile.TempPathFor(full);
        FileStream? stream = null;
        try
        {
            stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            Span<byte> length = stackalloc byte[8];
            BitConverter.TryWriteBytes(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            return new SafetensorsWriter(full, temp, sorted, stream);
        }
        catch
        {
            stream?.Dispose();
            AtomicFile.TryDelete(temp);
            throw;
        }
    }

    /// <summary>Writes the raw little-endian bytes of tensor <paramref name="name"/>, which must be <see cref="Next"/> and hold exactly its announced bytes.</summary>
    /// <exception cref="InvalidOperationException">The name is not the next tensor, the byte count differs, or the writer failed or was committed.</exception>
    public void Write(string name, ReadOnlySpan<byte> data)
    {
        var spec = Begin(name);
        try
        {
            if (data.Length != spec.ByteLength)
                throw new InvalidOperationException($"Saving {FilePath}: tensor '{name}' was announced as {spec.ByteLength:N0} bytes ({spec.DTypeName} {FormatShape(spec)}) but {data.Length:N0} bytes were given.");
            _stream!.Write(data);
        }
        catch
        {
            _failed = true;
            throw;
        }
        _next++;
    }

    /// <summary>
    /// Writes float tensor <paramref name="tensor"/> (any layout, F32/BF16/F16, on any device) as tensor <paramref name="name"/>,
    /// which must be <see cref="Next"/>, converted to its announced dtype (round-to-nearest-even, in chunks: no full copy
    /// of a dense float32 CPU tensor is made; a GPU tensor is copied to the host first, one tensor at a time). Its shape
    /// must be the announced one.
    /// </summary>
    /// <exception cref="InvalidOperationException">The name is not the next tensor, the shape or dtype does not fit, or the writer failed or was committed.</exception>
    /// <exception cref="ObjectDisposedException">The tensor was disposed.</exception>
    public void Write(string name, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var spec = Begin(name);
        try
        {
            if (tensor.IsDisposed) throw new ObjectDisposedException($"Saving {FilePath}: tensor '{name}' was disposed.");
            // A GPU tensor (an adapter trained with --device cuda) is read through a dense host copy of its own dtype.
            using var host = tensor.Device.Type == DeviceType.Cpu ? null : tensor.To(Device.Cpu);
            if (host != null) tensor = host;
            var dtype = Safetensors.ToDType(spec.DTypeName)
                ?? throw new InvalidOperationException($"Saving {FilePath}: tensor '{name}' was announced as {spec.DTypeName}; write its bytes, not a float tensor.");
            if (!tensor.ShapeArray.Select(d => (long)d).SequenceEqual(spec.Shape))
                throw new InvalidOperationException($"Saving {FilePath}: tensor '{name}' was announced with shape {FormatShape(spec)}, the tensor has {ShapeUtil.Format(tensor.ShapeArray)}.");
            long before = _stream!.Position;
            WriteData(_stream, tensor, dtype);
            if (_stream.Position - before != spec.ByteLength)
                throw new InvalidOperationException($"Saving {FilePath}: tensor '{name}' wrote {_stream.Position - before:N0} bytes, {spec.ByteLength:N0} were announced.");
        }
        catch
        {
            _failed = true;
            throw;
        }
        _next++;
    }

    /// <summary>
    /// Checks that every announced tensor was written, flushes the file to disk and renames it over the target
    /// (atomically replacing an existing file).
    /// </summary>
    /// <exception cref="InvalidOperationException">Tensors are missing, or the writer failed or was committed.</exception>
    public void Commit()
    {
        RequireUsable();
        try
        {
            if (Next is { } missing)
                throw new InvalidOperationException($"Saving {FilePath}: tensor '{missing.Name}' and {_tensors.Count - _next - 1} after it were announced but not written.");
            _stream!.Flush(flushToDisk: true);
            _stream.Dispose();
            _stream = null;
            File.Move(_temp, FilePath, overwrite: true);
        }
        catch
        {
            _failed = true;
            throw;
        }
        _committed = true;
    }

    /// <summary>Closes the file; unless <see cref="Commit"/> succeeded, deletes the temporary file (the target stays as it was).</summary>
    public void Dispose()
    {
        _stream?.Dispose();
        _stream = null;
        if (!_committed) AtomicFile.TryDelete(_temp);
    }

    // Any failure of a write or commit poisons the writer (the temporary file no longer matches its header), so only
    // Dispose remains.
    private SafetensorsTensorSpec Begin(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        RequireUsable();
        if (Next is not { } spec)
        {
            _failed = true;
            throw new InvalidOperationException($"Saving {FilePath}: all {_tensors.Count} announced tensors were written; '{name}' is one too many.");
        }
        if (spec.Name != name)
        {
            _failed = true;
            throw new InvalidOperationException($"Saving {FilePath}: tensor '{spec.Name}' comes next in the header, not '{name}'.");
        }
        return spec;
    }

    private void RequireUsable()
    {
        if (_committed) throw new InvalidOperationException($"Saving {FilePath}: the file was already committed.");
        if (_failed || _stream == null) throw new InvalidOperationException($"Saving {FilePath}: an earlier write failed or the writer was disposed; nothing more can be written.");
    }

    private static string FormatShape(SafetensorsTensorSpec spec) => $"[{string.Join(", ", spec.Shape)}]";

    private static byte[] BuildHeader(List<SafetensorsTensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata)
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
            foreach (var tensor in tensors)
            {
                long end = offset + tensor.ByteLength;
                writer.WriteStartObject(tensor.Name);
                writer.WriteString("dtype", tensor.DTypeName);
                writer.WriteStartArray("shape");
                foreach (long d in tensor.Shape) writer.WriteNumberValue(d);
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
        const int MaxSpan = 1 << 30;
        if (tensor.IsContiguous && tensor.DType == dtype)
        {
            byte* p = tensor.RawData;
            long bytes = tensor.Count * dtype.ElementSize();
            for (long done = 0; done < bytes; done += MaxSpan)
                stream.Write(new ReadOnlySpan<byte>(p + done, (int)Math.Min(MaxSpan, bytes - done)));
            return;
        }
        // Dense float32 is converted straight from the tensor; strided views and 16-bit sources go through a float32 copy.
        float[]? copy = tensor.IsContiguous && tensor.DType == DType.Float32 ? null : tensor.ToArray();
        float* values = copy == null ? tensor.Data : null;
        fixed (float* pinned = copy)
        {
            float* source = values != null ? values : pinned;
            long count = tensor.Count;
            if (dtype == DType.Float32)
            {
                for (long done = 0; done < count; done += MaxSpan / sizeof(float))
                    stream.Write(MemoryMarshal.AsBytes(new ReadOnlySpan<float>(source + done, (int)Math.Min(MaxSpan / sizeof(float), count - done))));
                return;
            }
            const int Chunk = 1 << 16;
            var narrow = new ushort[Math.Min(Chunk, count)];
            for (long done = 0; done < count; done += Chunk)
            {
                int n = (int)Math.Min(Chunk, count - done);
                Float16Conversions.Narrow(new ReadOnlySpan<float>(source + done, n), narrow, dtype);
                stream.Write(MemoryMarshal.AsBytes(narrow.AsSpan(0, n)));
            }
        }
    }
}
