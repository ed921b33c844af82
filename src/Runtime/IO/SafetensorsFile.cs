using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Unicode;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>Where one tensor lives in a safetensors file and what it holds.</summary>
/// <param name="Name">Tensor name (the header key).</param>
/// <param name="DTypeName">The safetensors dtype string (F32, BF16, F16, I64, …).</param>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="Begin">Start of the data, in bytes from the start of the data buffer.</param>
/// <param name="End">End of the data (exclusive), in bytes from the start of the data buffer.</param>
public sealed record SafetensorsTensorInfo(string Name, string DTypeName, int[] Shape, long Begin, long End)
{
    /// <summary>Number of elements.</summary>
    public long Count => ShapeUtil.Count(Shape);

    /// <summary>The runtime element type when this library can compute with it (F32, BF16, F16), else null.</summary>
    public DType? DType => Safetensors.ToDType(DTypeName);
}

/// <summary>
/// A safetensors file opened for reading. <see cref="Open"/> reads and validates only the header and memory-maps
/// the file, so opening a multi-gigabyte checkpoint takes milliseconds; tensor data is touched only when read.
/// Every violation of the format ends in a <see cref="SafetensorsFormatException"/> naming the file and the field.
/// Not thread-safe for concurrent <see cref="Dispose"/>; reads from several threads are fine.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Largest header the format allows (100,000,000 bytes).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    // A valid header nests objects three deep (root → tensor → shape array); a little slack, then refuse, so
    // adversarial input like 100k '[' fails on the first few bytes instead of recursing.
    private const int MaxJsonDepth = 8;

    private readonly Dictionary<string, SafetensorsTensorInfo> _tensors;
    private readonly List<string> _order;
    private SharedMapping? _mapping;
    private Microsoft.Win32.SafeHandles.SafeFileHandle? _handle;

    private SafetensorsFile(string path, Dictionary<string, SafetensorsTensorInfo> tensors, List<string> order,
        IReadOnlyDictionary<string, string> metadata, long dataStart, SharedMapping mapping)
    {
        FilePath = path;
        _tensors = tensors;
        _order = order;
        Metadata = metadata;
        DataStart = dataStart;
        _mapping = mapping;
    }

    /// <summary>The file this reader maps.</summary>
    public string FilePath { get; }

    /// <summary>The <c>__metadata__</c> entries (empty when the header has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Byte offset of the data buffer in the file (8 + header length).</summary>
    public long DataStart { get; }

    /// <summary>Tensor names in header order.</summary>
    public IReadOnlyList<string> TensorNames => _order;

    /// <summary>True when the file holds a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The header entry of tensor <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor; the message names the file.</exception>
    public SafetensorsTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _tensors.TryGetValue(name, out var info)
            ? info
            : throw new KeyNotFoundException($"{FilePath}: no tensor named '{name}' ({_tensors.Count} tensors in the file).");
    }

    /// <summary>Opens <paramref name="path"/>, validating the whole header before anything else happens.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafetensorsFormatException">The header breaks the format; the message says where and how.</exception>
    public static SafetensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw new SafetensorsFormatException(path, $"{fileLength} bytes is too short for the 8-byte header length.");
        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BitConverter.ToUInt64(prefix);
        if (headerLength > MaxHeaderBytes)
            throw new SafetensorsFormatException(path, $"header length {headerLength:N0} exceeds the format's limit of {MaxHeaderBytes:N0} bytes.");
        if ((long)headerLength > fileLength - 8)
            throw new SafetensorsFormatException(path, $"header length {headerLength:N0} runs past the end of the file ({fileLength:N0} bytes).");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataStart = 8 + (long)headerLength;
        var (tensors, order, metadata) = ParseHeader(path, header, fileLength - dataStart);

        var mapping = SharedMapping.Create(stream, fileLength);
        try
        {
            return new SafetensorsFile(path, tensors, order, metadata, dataStart, mapping)
            {
                _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read),
            };
        }
        catch
        {
            mapping.Release();
            throw;
        }
    }

    /// <summary>
    /// Reads tensor <paramref name="name"/> into a new dense CPU tensor of <paramref name="as"/> (float32 by
    /// default), converting between F32, BF16 and F16. The caller owns (disposes) the result.
    /// </summary>
    /// <exception cref="SafetensorsFormatException">The stored dtype is not F32, BF16 or F16.</exception>
    public Tensor ReadTensor(string name, DType? @as = null)
    {
        var info = GetInfo(name);
        var source = RequireComputeType(info);
        var result = Tensor.Create(info.Shape, @as ?? DType.Float32, zeroed: false, scoped: false);
        try
        {
            CopyConverted(info, source, result);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Zero-copy view of tensor <paramref name="name"/> in its stored dtype: the tensor's memory is the mapping
    /// itself, which stays alive until every such tensor (and this reader) is disposed. Treat it as read-only: the
    /// mapping is copy-on-write, so a write only changes this process's private copy of the page, never the file.
    /// Falls back to a copy when the data is not aligned to its element size.
    /// </summary>
    /// <exception cref="SafetensorsFormatException">The stored dtype is not F32, BF16 or F16.</exception>
    public Tensor MapTensor(string name)
    {
        var info = GetInfo(name);
        var dtype = RequireComputeType(info);
        var mapping = Mapping;
        byte* pointer = mapping.Pointer + DataStart + info.Begin;
        if ((nuint)pointer % (nuint)dtype.ElementSize() != 0) return ReadTensor(name, dtype);
        mapping.AddRef();
        var storage = new MappedStorage(mapping, pointer, info.End - info.Begin);
        return Tensor.OnStorage(storage, info.Shape, dtype, scoped: false);
    }

    /// <summary>Converts tensor <paramref name="name"/> straight into <paramref name="destination"/> (dense CPU, same element count).</summary>
    internal void ReadInto(string name, Tensor destination)
    {
        var info = GetInfo(name);
        var source = RequireComputeType(info);
        if (destination.Count != info.Count || !destination.IsContiguous)
            throw new ArgumentException($"{FilePath}: '{name}' has {info.Count} elements; {destination} cannot take them.", nameof(destination));
        CopyConverted(info, source, destination);
    }

    /// <summary>
    /// The stored bytes of tensor <paramref name="name"/> in this reader's private copy-on-write mapping: a write changes
    /// what later reads through this reader return (adapter formats reorder q/k rows into a model's layout this way),
    /// never the file.
    /// </summary>
    internal Span<byte> MappedBytes(string name)
    {
        var info = GetInfo(name);
        return new Span<byte>(Mapping.Pointer + DataStart + info.Begin, checked((int)(info.End - info.Begin)));
    }

    /// <summary>
    /// Reads elements [<paramref name="first"/>, first + destination.Length) of tensor <paramref name="name"/> as float32,
    /// widening 16-bit data. Reads go through the file, not the mapping, so the data read does not stay in this process's
    /// resident set: loaders stream multi-gigabyte checkpoints through a small scratch buffer.
    /// </summary>
    /// <exception cref="SafetensorsFormatException">The stored dtype is not F32, BF16 or F16, or the file ends early.</exception>
    internal void ReadElements(string name, long first, Span<float> destination)
    {
        var info = GetInfo(name);
        var source = RequireComputeType(info);
        CheckRange(info, first, destination.Length);
        int size = source.ElementSize();
        if (source == DType.Float32)
        {
            ReadFileBytes(info, first * size, MemoryMarshal.AsBytes(destination));
            return;
        }
        const int Chunk = 1 << 18;                                                          // elements per read: 512 KiB of 16-bit data
        var scratch = System.Buffers.ArrayPool<ushort>.Shared.Rent(Math.Min(Chunk, destination.Length));
        try
        {
            for (int done = 0; done < destination.Length; done += Chunk)
            {
                int n = Math.Min(Chunk, destination.Length - done);
                var bits = scratch.AsSpan(0, n);
                ReadFileBytes(info, (first + done) * size, MemoryMarshal.AsBytes(bits));
                Float16Conversions.Widen(bits, destination.Slice(done, n), source);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<ushort>.Shared.Return(scratch);
        }
    }

    /// <summary>Reads the stored bytes of tensor <paramref name="name"/>, as they are in the file (no conversion), through the file rather than the mapping.</summary>
    /// <exception cref="SafetensorsFormatException">The file ends early.</exception>
    internal void ReadStoredBytes(string name, Span<byte> destination)
    {
        var info = GetInfo(name);
        if (destination.Length != info.End - info.Begin)
            throw new ArgumentException($"{FilePath}: '{name}' holds {info.End - info.Begin} bytes, not {destination.Length}.", nameof(destination));
        ReadFileBytes(info, 0, destination);
    }

    private void CheckRange(SafetensorsTensorInfo info, long first, int length)
    {
        if (first < 0 || first + length > info.Count)
            throw new ArgumentOutOfRangeException(nameof(first), $"{FilePath}: '{info.Name}' has {info.Count} elements; elements {first}..{first + length - 1} do not exist.");
    }

    private void ReadFileBytes(SafetensorsTensorInfo info, long offsetInTensor, Span<byte> destination)
    {
        var handle = _handle ?? throw new ObjectDisposedException(nameof(SafetensorsFile), $"{FilePath} was closed.");
        long position = DataStart + info.Begin + offsetInTensor;
        int read = AtomicFile.ReadAt(handle, destination, position);
        if (read < destination.Length)
            throw new SafetensorsFormatException(FilePath,
                $"the file ends at byte {position + read:N0}, inside tensor '{info.Name}' (bytes {DataStart + info.Begin:N0}..{DataStart + info.End:N0}): it was cut short after it was opened, or is being written. Copy or download it again.");
    }

    /// <summary>Unmaps the file once no zero-copy tensor still uses it, and closes the file.</summary>
    public void Dispose()
    {
        Interlocked.Exchange(ref _mapping, null)?.Release();
        Interlocked.Exchange(ref _handle, null)?.Dispose();
    }

    private SharedMapping Mapping => _mapping ?? throw new ObjectDisposedException(nameof(SafetensorsFile), $"{FilePath} was closed.");

    private DType RequireComputeType(SafetensorsTensorInfo info) =>
        info.DType ?? throw new SafetensorsFormatException(FilePath,
            $"tensor '{info.Name}' is stored as {info.DTypeName}; only F32, BF16 and F16 tensors can be read as floating-point tensors.");

    private void CopyConverted(SafetensorsTensorInfo info, DType source, Tensor destination)
    {
        byte* src = Mapping.Pointer + DataStart + info.Begin;
        byte* dst = destination.RawData;
        long count = info.Count;
        var target = destination.DType;
        if (source == target)
        {
            Buffer.MemoryCopy(src, dst, count * target.ElementSize(), count * target.ElementSize());
            return;
        }
        // Convert in chunks: spans are int-sized, and a small float scratch serves the 16-bit ⇄ 16-bit case.
        const int Chunk = 1 << 16;
        float[]? scratch = source != DType.Float32 && target != DType.Float32 ? new float[Chunk] : null;
        for (long done = 0; done < count; done += Chunk)
        {
            int n = (int)Math.Min(Chunk, count - done);
            if (source == DType.Float32)
                Float16Conversions.Narrow(new ReadOnlySpan<float>((float*)src + done, n), new Span<ushort>((ushort*)dst + done, n), target);
            else if (target == DType.Float32)
                Float16Conversions.Widen(new ReadOnlySpan<ushort>((ushort*)src + done, n), new Span<float>((float*)dst + done, n), source);
            else
            {
                Float16Conversions.Widen(new ReadOnlySpan<ushort>((ushort*)src + done, n), scratch, source);
                Float16Conversions.Narrow(scratch.AsSpan(0, n), new Span<ushort>((ushort*)dst + done, n), target);
            }
        }
    }

    // ---- header parsing ------------------------------------------------------------------------------------

    private static (Dictionary<string, SafetensorsTensorInfo>, List<string>, IReadOnlyDictionary<string, string>) ParseHeader(
        string path, byte[] header, long bufferLength)
    {
        if (header.Length == 0 || header[0] != (byte)'{')
            throw new SafetensorsFormatException(path, "the header must be a JSON object starting with '{'.");
        if (!Utf8.IsValid(header))
            throw new SafetensorsFormatException(path, "the header is not valid UTF-8.");
        var json = header.AsSpan().TrimEnd((byte)' '); // the format allows right-padding with spaces
        var tensors = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
        var order = new List<string>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        bool sawMetadata = false;
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = MaxJsonDepth });
            reader.Read(); // StartObject, checked by the first byte
            while (true)
            {
                Next(ref reader, path, "the header");
                if (reader.TokenType == JsonTokenType.EndObject) break;
                string key = reader.GetString()!;
                if (tensors.ContainsKey(key) || (key == "__metadata__" && sawMetadata))
                    throw new SafetensorsFormatException(path, $"duplicate entry '{key}' in the header.");
                Next(ref reader, path, $"entry '{key}'");
                if (key == "__metadata__")
                {
                    sawMetadata = true;
                    ReadMetadata(ref reader, path, metadata);
                    continue;
                }
                tensors.Add(key, ReadTensorEntry(ref reader, path, key, bufferLength));
                order.Add(key);
            }
            if (reader.Read())
                throw new SafetensorsFormatException(path, "unexpected content after the header's JSON object.");
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, $"the header is not valid JSON ({e.Message}).", e);
        }
        CheckCoverage(path, tensors.Values, bufferLength);
        return (tensors, order, metadata);
    }

    private static void Next(ref Utf8JsonReader reader, string path, string where)
    {
        if (!reader.Read()) throw new SafetensorsFormatException(path, $"the header ends inside {where}.");
    }

    private static void ReadMetadata(ref Utf8JsonReader reader, string path, Dictionary<string, string> metadata)
    {
        if (reader.TokenType == JsonTokenType.Null) return;
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new SafetensorsFormatException(path, $"__metadata__ must be an object of strings, found {reader.TokenType}.");
        while (true)
        {
            Next(ref reader, path, "__metadata__");
            if (reader.TokenType == JsonTokenType.EndObject) return;
            string key = reader.GetString()!;
            Next(ref reader, path, $"__metadata__['{key}']");
            if (reader.TokenType != JsonTokenType.String)
                throw new SafetensorsFormatException(path, $"__metadata__['{key}'] must be a string, found {reader.TokenType}.");
            if (!metadata.TryAdd(key, reader.GetString()!))
                throw new SafetensorsFormatException(path, $"duplicate key '{key}' in __metadata__.");
        }
    }

    private static SafetensorsTensorInfo ReadTensorEntry(ref Utf8JsonReader reader, string path, string name, long bufferLength)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new SafetensorsFormatException(path, $"tensor '{name}' must be an object with dtype, shape and data_offsets, found {reader.TokenType}.");
        string? dtype = null;
        List<long>? shape = null, offsets = null;
        while (true)
        {
            Next(ref reader, path, $"tensor '{name}'");
            if (reader.TokenType == JsonTokenType.EndObject) break;
            string field = reader.GetString()!;
            Next(ref reader, path, $"tensor '{name}'.{field}");
            switch (field)
            {
                case "dtype" when dtype == null:
                    if (reader.TokenType != JsonTokenType.String)
                        throw new SafetensorsFormatException(path, $"tensor '{name}': dtype must be a string, found {reader.TokenType}.");
                    dtype = reader.GetString()!;
                    break;
                case "shape" when shape == null:
                    shape = ReadIntegers(ref reader, path, name, field);
                    break;
                case "data_offsets" when offsets == null:
                    offsets = ReadIntegers(ref reader, path, name, field);
                    break;
                case "dtype" or "shape" or "data_offsets":
                    throw new SafetensorsFormatException(path, $"tensor '{name}': duplicate field '{field}'.");
                default:
                    throw new SafetensorsFormatException(path, $"tensor '{name}': unknown field '{field}' (expected dtype, shape, data_offsets).");
            }
        }
        if (dtype == null || shape == null || offsets == null)
            throw new SafetensorsFormatException(path, $"tensor '{name}' lacks {(dtype == null ? "dtype" : shape == null ? "shape" : "data_offsets")}.");
        int elementSize = Safetensors.ElementSize(dtype)
            ?? throw new SafetensorsFormatException(path, $"tensor '{name}' has unknown dtype '{dtype}'.");
        if (offsets.Count != 2)
            throw new SafetensorsFormatException(path, $"tensor '{name}': data_offsets must be [begin, end], found {offsets.Count} values.");
        long begin = offsets[0], end = offsets[1];
        if (begin > end)
            throw new SafetensorsFormatException(path, $"tensor '{name}': data_offsets [{begin}, {end}] end before they begin.");
        if (end > bufferLength)
            throw new SafetensorsFormatException(path, $"tensor '{name}': data_offsets [{begin}, {end}] run past the data buffer ({bufferLength:N0} bytes).");
        var dims = new int[shape.Count];
        long bytes = elementSize;
        for (int i = 0; i < dims.Length; i++)
        {
            if (shape[i] > int.MaxValue)
                throw new SafetensorsFormatException(path, $"tensor '{name}': dimension {i} of size {shape[i]:N0} is too large.");
            dims[i] = (int)shape[i];
            // Saturate instead of overflowing: a saturated size cannot match the offsets, and a later 0 still gives 0.
            bytes = dims[i] != 0 && bytes > long.MaxValue / dims[i] ? long.MaxValue : bytes * dims[i];
        }
        if (bytes != end - begin)
            throw new SafetensorsFormatException(path,
                $"tensor '{name}': shape {ShapeUtil.Format(dims)} of {dtype} needs {(bytes == long.MaxValue ? "more bytes than a file can hold" : $"{bytes:N0} bytes")}, but data_offsets [{begin}, {end}] span {end - begin:N0}.");
        return new SafetensorsTensorInfo(name, dtype, dims, begin, end);
    }

    private static List<long> ReadIntegers(ref Utf8JsonReader reader, string path, string name, string field)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new SafetensorsFormatException(path, $"tensor '{name}': {field} must be an array of integers, found {reader.TokenType}.");
        var values = new List<long>();
        while (true)
        {
            Next(ref reader, path, $"tensor '{name}'.{field}");
            if (reader.TokenType == JsonTokenType.EndArray) return values;
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long v) || v < 0)
                throw new SafetensorsFormatException(path, $"tensor '{name}': {field} must hold non-negative integers.");
            if (values.Count == 64)
                throw new SafetensorsFormatException(path, $"tensor '{name}': {field} has more than 64 entries.");
            values.Add(v);
        }
    }

    /// <summary>The tensors must tile the data buffer exactly: no overlaps, no holes, nothing left over.</summary>
    private static void CheckCoverage(string path, IEnumerable<SafetensorsTensorInfo> tensors, long bufferLength)
    {
        long cursor = 0;
        string previous = "the start of the buffer";
        foreach (var t in tensors.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin < cursor)
                throw new SafetensorsFormatException(path, $"tensor '{t.Name}' (bytes {t.Begin}..{t.End}) overlaps {previous}.");
            if (t.Begin > cursor)
                throw new SafetensorsFormatException(path, $"hole in the data buffer: bytes {cursor}..{t.Begin} before tensor '{t.Name}' belong to no tensor.");
            cursor = t.End;
            previous = $"tensor '{t.Name}'";
        }
        if (cursor != bufferLength)
            throw new SafetensorsFormatException(path, $"the tensors cover {cursor:N0} bytes of the {bufferLength:N0}-byte data buffer; the rest belongs to no tensor.");
    }

    // ---- mapping lifetime ------------------------------------------------------------------------------------

    /// <summary>The file mapping, reference-counted so zero-copy tensors outlive the reader that made them.</summary>
    private sealed class SharedMapping
    {
        private readonly MemoryMappedFile _file;
        private readonly MemoryMappedViewAccessor _view;
        private int _refCount = 1;

        private SharedMapping(MemoryMappedFile file, MemoryMappedViewAccessor view, byte* pointer)
        {
            _file = file;
            _view = view;
            Pointer = pointer;
        }

        public byte* Pointer { get; }

        public static SharedMapping Create(FileStream stream, long length)
        {
            // Copy-on-write: pages are shared with the page cache until someone writes, and a write never reaches the file.
            var file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.CopyOnWrite, HandleInheritability.None, leaveOpen: true);
            MemoryMappedViewAccessor? view = null;
            try
            {
                view = file.CreateViewAccessor(0, length, MemoryMappedFileAccess.CopyOnWrite);
                byte* pointer = null;
                view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
                return new SharedMapping(file, view, pointer + view.PointerOffset);
            }
            catch
            {
                view?.Dispose();
                file.Dispose();
                throw;
            }
        }

        public void AddRef()
        {
            if (Interlocked.Increment(ref _refCount) <= 1)
                throw new ObjectDisposedException(nameof(SafetensorsFile), "The file mapping was already released.");
        }

        public void Release()
        {
            if (Interlocked.Decrement(ref _refCount) != 0) return;
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _file.Dispose();
        }
    }

    /// <summary>Tensor storage inside a file mapping; releasing it drops one hold on the mapping.</summary>
    private sealed class MappedStorage(SharedMapping mapping, byte* pointer, long byteLength) : HostStorage(byteLength)
    {
        private SharedMapping? _mapping = mapping;

        public override byte* Pointer => _mapping != null ? pointer : throw new ObjectDisposedException(nameof(MappedStorage));

        protected override void Free() => Interlocked.Exchange(ref _mapping, null)?.Release();
    }
}
