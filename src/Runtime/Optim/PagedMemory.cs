using System.IO.MemoryMappedFiles;
using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>
/// Pageable host memory for optimizer state, the CPU counterpart of bitsandbytes' paged optimizers (which put
/// state in CUDA unified memory so it can be evicted when the device runs short). Each allocation is a shared
/// mapping of its own temporary file: the pages are ordinary page cache, so under memory pressure the OS writes
/// cold state to the file and drops it from RAM instead of swapping or failing, and reads it back on the next
/// touch. Access to resident pages costs the same as anonymous memory. None of it is on the GC heap.
/// </summary>
/// <remarks>
/// Unlike CUDA unified memory, a shared file mapping is also written back in the background: the OS flushes dirty
/// pages periodically (about every 30 s on Linux) even without memory pressure, so paged state that changes every
/// step costs disk bandwidth of roughly its size per flush interval. Files go to <see cref="Path.GetTempPath"/>
/// (TMPDIR on Unix, TMP/TEMP on Windows); point that at a local disk-backed directory, since on a RAM-backed tmpfs
/// eviction can only go to swap.
/// </remarks>
internal static class PagedMemory
{
    /// <summary>Prefix of the temporary file names, so they are recognisable in the temp directory.</summary>
    public const string FilePrefix = "peftgen-paged-";

    private static long s_liveBytes;

    /// <summary>Bytes currently mapped by live <see cref="MappedStorage"/> instances.</summary>
    public static long LiveBytes => Interlocked.Read(ref s_liveBytes);

    /// <summary>A zero-filled, unscoped float32 tensor on a file mapping; its owner disposes it.</summary>
    /// <param name="shape">The tensor's shape.</param>
    public static Tensor Zeros(int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ShapeUtil.Validate(shape);
        var storage = new MappedStorage(ShapeUtil.Count(shape) * DType.Float32.ElementSize());
        try
        {
            return Tensor.OnStorage(storage, shape, DType.Float32, scoped: false);
        }
        catch
        {
            storage.Release();
            throw;
        }
    }

    internal static void Track(long bytes) => Interlocked.Add(ref s_liveBytes, bytes);
}

/// <summary>
/// Host storage on a shared mapping of a temporary file that is deleted when the storage is freed. A new file is
/// all zeros (and sparse: disk blocks are used only for pages the OS actually writes back). Freed when the last
/// tensor releases it; the file handle, mapping and view are closed then, not by a finalizer.
/// </summary>
internal sealed unsafe class MappedStorage : HostStorage
{
    private FileStream? _file;
    private MemoryMappedFile? _map;
    private MemoryMappedViewAccessor? _view;
    private byte* _pointer;

    /// <summary>Creates and maps a zero-filled temporary file of <paramref name="byteLength"/> bytes.</summary>
    /// <exception cref="IOException">The temporary file could not be created or extended (for example, the disk is full).</exception>
    public MappedStorage(long byteLength) : base(byteLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(byteLength);
        FilePath = Path.Combine(Path.GetTempPath(), $"{PagedMemory.FilePrefix}{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        // The mapping size is fixed at creation and cannot be 0, so an empty tensor still maps one byte.
        long mappedLength = Math.Max(byteLength, 1);
        try
        {
            // DeleteOnClose removes the file when Free closes the handle (on Windows also when the process dies;
            // on Unix a killed process leaves it in the temp directory). The file stays visible while in use so
            // its size and existence can be inspected.
            _file = new FileStream(FilePath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None,
                bufferSize: 1, FileOptions.DeleteOnClose);
            _file.SetLength(mappedLength);
            _map = MemoryMappedFile.CreateFromFile(_file, mapName: null, mappedLength, MemoryMappedFileAccess.ReadWrite,
                HandleInheritability.None, leaveOpen: true);
            _view = _map.CreateViewAccessor(0, mappedLength, MemoryMappedFileAccess.ReadWrite);
            byte* basePointer = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
            _pointer = basePointer + _view.PointerOffset;
        }
        catch
        {
            Close();
            throw;
        }
        MappedLength = mappedLength;
        PagedMemory.Track(mappedLength);
    }

    /// <summary>The backing file; it exists until the storage is freed.</summary>
    public string FilePath { get; }

    /// <summary>Bytes mapped (the byte length, at least 1).</summary>
    public long MappedLength { get; }

    /// <summary>Base address of the mapping; valid until the storage is freed.</summary>
    public override byte* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(MappedStorage));

    /// <summary>Unmaps the view and closes the file, which deletes it.</summary>
    protected override void Free()
    {
        if (_pointer == null) return;
        Close();
        PagedMemory.Track(-MappedLength);
    }

    private void Close()
    {
        if (_pointer != null)
        {
            _pointer = null;
            _view!.SafeMemoryMappedViewHandle.ReleasePointer();
        }
        _view?.Dispose();
        _view = null;
        _map?.Dispose();
        _map = null;
        _file?.Dispose();
        _file = null;
    }
}
