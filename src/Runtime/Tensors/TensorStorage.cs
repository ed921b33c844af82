using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PeftGen.Tensors;

/// <summary>
/// A reference-counted buffer that one or more tensors (views) share. When the last tensor lets go,
/// the buffer goes back to its backend's pool at once; nothing waits for a finalizer.
/// </summary>
internal abstract class TensorStorage
{
    private int _refCount = 1;

    protected TensorStorage(long byteLength, Device device)
    {
        ByteLength = byteLength;
        Device = device;
    }

    public long ByteLength { get; }
    public Device Device { get; }
    public bool IsReleased => Volatile.Read(ref _refCount) <= 0;

    public void AddRef()
    {
        if (Interlocked.Increment(ref _refCount) <= 1)
            throw new ObjectDisposedException(nameof(TensorStorage), "The tensor's storage was already released.");
    }

    public void Release()
    {
        int left = Interlocked.Decrement(ref _refCount);
        if (left == 0) Free();
    }

    protected abstract void Free();
}

/// <summary>
/// Stands in for the storage of a tensor whose values were dropped early (<see cref="Tensor.ReleaseValues"/>): it keeps
/// the device, holds no memory, and is neither host nor device memory, so any kernel that tries to read it fails loudly.
/// </summary>
internal sealed class ReleasedStorage(Device device) : TensorStorage(0, device)
{
    protected override void Free() { }
}

/// <summary>
/// The storage of a parameter created under <see cref="EmptyWeights.Scope"/> (PyTorch's meta device): it knows its size
/// and holds no memory, so a model can be built to the shapes of a checkpoint and each weight allocated only when the
/// loader reads it (<see cref="Tensor.Materialize"/>), in the type it will be kept in. Kernels that meet it fail loudly.
/// </summary>
internal sealed class EmptyStorage(long byteLength) : TensorStorage(byteLength, Device.Cpu)
{
    protected override void Free() { }
}

/// <summary>Storage in host memory at a stable address, readable by the CPU kernels.</summary>
internal abstract unsafe class HostStorage(long byteLength) : TensorStorage(byteLength, Device.Cpu)
{
    /// <summary>Base address; valid until the storage is released.</summary>
    public abstract byte* Pointer { get; }
}

/// <summary>Host storage: a pinned array (stable address for SIMD kernels) rented from <see cref="CpuBufferPool"/>.</summary>
internal sealed unsafe class CpuStorage : HostStorage
{
    private byte[]? _buffer;

    public CpuStorage(long byteLength, bool zeroed) : base(byteLength)
    {
        using var timer = Backends.WorkProfiler.Time(Backends.WorkKind.Allocation);
        HostMemoryStats.Allocated(byteLength);
        _buffer = CpuBufferPool.Rent(byteLength);
        if (zeroed) NativeMemory.Clear(Pointer, (nuint)byteLength);
    }

    /// <summary>Base address (the array lives on the pinned object heap, so it never moves).</summary>
    public override byte* Pointer => (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(
        _buffer ?? throw new ObjectDisposedException(nameof(CpuStorage))));

    protected override void Free()
    {
        using var timer = Backends.WorkProfiler.Time(Backends.WorkKind.Allocation);
        var buffer = Interlocked.Exchange(ref _buffer, null);
        if (buffer == null) return;
        HostMemoryStats.Freed(ByteLength);
        CpuBufferPool.Return(buffer);
    }
}

/// <summary>
/// Bytes of tensor storage this thread holds in host memory now and at most since <see cref="ResetPeak"/>: what a
/// training step's activations cost, measured where they are allocated (per thread, so parallel work does not mix in).
/// </summary>
internal static class HostMemoryStats
{
    [ThreadStatic] private static long t_live;
    [ThreadStatic] private static long t_peak;

    public static long Live => t_live;

    public static long Peak => t_peak;

    public static void ResetPeak() => t_peak = t_live;

    public static void Allocated(long bytes)
    {
        t_live += bytes;
        if (t_live > t_peak) t_peak = t_live;
    }

    public static void Freed(long bytes) => t_live -= bytes;
}

/// <summary>
/// Pool of pinned host buffers keyed by exact size. A training step allocates the same sizes every step,
/// so after the first step every allocation is a pool hit and the GC sees no large-object churn.
/// </summary>
internal static class CpuBufferPool
{
    private const long Alignment = 64;
    private static readonly ConcurrentDictionary<long, ConcurrentBag<byte[]>> s_free = new();
    private static long s_pooledBytes;

    /// <summary>Upper bound on bytes kept for reuse; larger surpluses go back to the GC.</summary>
    public static long MaxPooledBytes { get; set; } = 8L << 30;

    /// <summary>Bytes currently held in the pool (not in use).</summary>
    public static long PooledBytes => Interlocked.Read(ref s_pooledBytes);

    public static byte[] Rent(long byteLength)
    {
        long size = RoundUp(Math.Max(byteLength, 1));
        if (s_free.TryGetValue(size, out var bag) && bag.TryTake(out var buffer))
        {
            Interlocked.Add(ref s_pooledBytes, -size);
            return buffer;
        }
        if (size > Array.MaxLength)
            throw new OutOfMemoryException($"A single tensor of {byteLength:N0} bytes exceeds the largest host buffer .NET can allocate ({Array.MaxLength:N0} bytes).");
        return GC.AllocateUninitializedArray<byte>((int)size, pinned: true);
    }

    public static void Return(byte[] buffer)
    {
        if (Interlocked.Add(ref s_pooledBytes, buffer.LongLength) > MaxPooledBytes)
        {
            Interlocked.Add(ref s_pooledBytes, -buffer.LongLength);
            return; // let the GC have it
        }
        s_free.GetOrAdd(buffer.LongLength, _ => new ConcurrentBag<byte[]>()).Add(buffer);
    }

    /// <summary>Drops every pooled buffer (for example after training, before a long inference session).</summary>
    public static void Trim()
    {
        foreach (var bag in s_free.Values)
            while (bag.TryTake(out var buffer)) Interlocked.Add(ref s_pooledBytes, -buffer.LongLength);
    }

    private static long RoundUp(long bytes) => (bytes + Alignment - 1) / Alignment * Alignment;
}
