namespace PeftGen.Backends.Cuda;

/// <summary>Raw device memory (cuMemAlloc / cuMemFree on a GPU; a fake in tests).</summary>
internal interface IDeviceMemory
{
    /// <summary>A new allocation of exactly <paramref name="bytes"/> bytes.</summary>
    /// <exception cref="CudaOutOfMemoryException">The device has no room.</exception>
    ulong Allocate(long bytes);

    /// <summary>Returns an allocation made by <see cref="Allocate"/>.</summary>
    void Free(ulong pointer);
}

/// <summary>A block handed out by <see cref="CudaCachingAllocator"/>.</summary>
/// <param name="Pointer">Device address.</param>
/// <param name="Bytes">Usable size (the size class, at least what was asked for).</param>
/// <param name="Stream">The stream the block is used on; it is reused only by allocations on the same stream.</param>
internal readonly record struct DeviceBlock(ulong Pointer, long Bytes, IntPtr Stream);

/// <summary>Counters of a <see cref="CudaCachingAllocator"/>.</summary>
/// <param name="AllocatedBytes">Bytes in blocks handed out and not yet freed.</param>
/// <param name="CachedBytes">Bytes in freed blocks kept for reuse.</param>
/// <param name="PeakAllocatedBytes">Highest <paramref name="AllocatedBytes"/> so far.</param>
/// <param name="ReservedBytes">Bytes held from the device (allocated + cached).</param>
/// <param name="Hits">Allocations served from the cache.</param>
/// <param name="Misses">Allocations that went to the device.</param>
/// <param name="Retries">Device allocations that failed, released the cache and were retried.</param>
internal readonly record struct AllocatorStats(long AllocatedBytes, long CachedBytes, long PeakAllocatedBytes, long ReservedBytes,
    long Hits, long Misses, long Retries);

/// <summary>
/// A caching allocator for device memory, after PyTorch's: cuMemAlloc and cuMemFree synchronise the device and cost
/// tens of microseconds, while a training step allocates the same sizes every step. Freed blocks are kept in bins by
/// size class and stream; an allocation of the same class on the same stream reuses one at once. Reuse on the same
/// stream is safe without events because the stream runs the new kernels after the old ones (stream order). When the
/// device is out of memory, every cached block is released and the allocation retried once.
/// </summary>
/// <remarks>
/// Size classes: requests under 1 MiB round up to a multiple of 512 bytes; larger ones to a multiple of 2 MiB, so a
/// large tensor whose size wobbles slightly still reuses its block. Not thread-safe per se: calls are serialised by a lock.
/// </remarks>
internal sealed class CudaCachingAllocator : IDisposable
{
    /// <summary>Granularity of small requests.</summary>
    public const long SmallGranularity = 512;

    /// <summary>Requests from this size up are large.</summary>
    public const long LargeThreshold = 1L << 20;

    /// <summary>Granularity of large requests.</summary>
    public const long LargeGranularity = 2L << 20;

    private readonly IDeviceMemory _device;
    private readonly Dictionary<(long Size, IntPtr Stream), Stack<ulong>> _free = [];
    private readonly Dictionary<ulong, DeviceBlock> _live = [];
    private readonly Lock _lock = new();
    private long _allocated, _cached, _peak, _hits, _misses, _retries;
    private bool _disposed;

    /// <summary>Creates an allocator over <paramref name="device"/>.</summary>
    public CudaCachingAllocator(IDeviceMemory device) => _device = device ?? throw new ArgumentNullException(nameof(device));

    /// <summary>The size class of a request: its size rounded up to the class granularity (at least 512 bytes).</summary>
    public static long SizeClass(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        long size = Math.Max(bytes, 1);
        long granularity = size < LargeThreshold ? SmallGranularity : LargeGranularity;
        return checked((size + granularity - 1) / granularity * granularity);
    }

    /// <summary>The counters now.</summary>
    public AllocatorStats Stats
    {
        get
        {
            lock (_lock) return new AllocatorStats(_allocated, _cached, _peak, _allocated + _cached, _hits, _misses, _retries);
        }
    }

    /// <summary>Starts a new peak: <see cref="AllocatorStats.PeakAllocatedBytes"/> becomes the bytes allocated now.</summary>
    public void ResetPeak()
    {
        lock (_lock) _peak = _allocated;
    }

    /// <summary>A block of at least <paramref name="bytes"/> bytes for use on <paramref name="stream"/>.</summary>
    /// <exception cref="CudaOutOfMemoryException">The device is out of memory even after releasing the cache.</exception>
    public DeviceBlock Allocate(long bytes, IntPtr stream)
    {
        long size = SizeClass(bytes);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ulong pointer;
            if (_free.TryGetValue((size, stream), out var bin) && bin.TryPop(out pointer))
            {
                _cached -= size;
                _hits++;
            }
            else
            {
                pointer = AllocateFromDevice(size, bytes);
                _misses++;
            }
            var block = new DeviceBlock(pointer, size, stream);
            _live.Add(pointer, block);
            _allocated += size;
            _peak = Math.Max(_peak, _allocated);
            return block;
        }
    }

    /// <summary>Returns a block to the cache of its stream.</summary>
    /// <exception cref="InvalidOperationException">The block is not live (freed twice, or not from this allocator).</exception>
    public void Free(DeviceBlock block)
    {
        lock (_lock)
        {
            if (!_live.Remove(block.Pointer))
                throw new InvalidOperationException($"Device block 0x{block.Pointer:x} ({block.Bytes:N0} bytes) is not live: freed twice, or not from this allocator.");
            _allocated -= block.Bytes;
            if (_disposed)
            {
                _device.Free(block.Pointer);
                return;
            }
            if (!_free.TryGetValue((block.Bytes, block.Stream), out var bin)) _free[(block.Bytes, block.Stream)] = bin = new Stack<ulong>();
            bin.Push(block.Pointer);
            _cached += block.Bytes;
        }
    }

    /// <summary>Gives every cached block back to the device; returns the bytes released.</summary>
    public long ReleaseCached()
    {
        lock (_lock) return ReleaseCachedLocked();
    }

    /// <summary>Releases the cache; blocks still live go back to the device when freed.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            ReleaseCachedLocked();
            _disposed = true;
        }
    }

    private ulong AllocateFromDevice(long size, long requested)
    {
        try
        {
            return _device.Allocate(size);
        }
        catch (CudaOutOfMemoryException)
        {
            _retries++;
            if (ReleaseCachedLocked() == 0) throw OutOfMemory(size, requested, null);
            try
            {
                return _device.Allocate(size);
            }
            catch (CudaOutOfMemoryException e)
            {
                throw OutOfMemory(size, requested, e);
            }
        }
    }

    private CudaOutOfMemoryException OutOfMemory(long size, long requested, Exception? inner)
    {
        string message = $"The GPU is out of memory allocating {requested:N0} bytes (size class {size:N0}); this process holds " +
            $"{_allocated:N0} bytes in live tensors (peak {_peak:N0}). Use a smaller batch or sequence length, gradient checkpointing, " +
            "or a paged optimizer.";
        return inner == null ? new CudaOutOfMemoryException(message) : new CudaOutOfMemoryException(message, inner);
    }

    private long ReleaseCachedLocked()
    {
        long released = 0;
        foreach (var ((size, _), bin) in _free)
        {
            while (bin.TryPop(out var pointer))
            {
                _device.Free(pointer);
                released += size;
            }
        }
        _free.Clear();
        _cached -= released;
        return released;
    }
}
