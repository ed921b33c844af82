using System.Runtime.InteropServices;
using PeftGen.Backends.Cuda.Native;
using PeftGen.Tensors;

namespace PeftGen.Backends.Cuda;

/// <summary>
/// The running form of <see cref="PagedStatePolicy.Place"/>: optimizer state arrives one buffer at a time, so the budget
/// (free − headroom, taken when the first paged buffer of a device is placed) is spent in arrival order. Pure, so it is
/// tested on the CPU.
/// </summary>
internal sealed class PagedStateBudget(long freeBytes, long totalBytes)
{
    private readonly long _budget = PagedStatePolicy.ManagedBudget(freeBytes, totalBytes);
    private long _used;

    /// <summary>Bytes of managed memory placed so far (released buffers are given back).</summary>
    public long ManagedBytes => _used;

    /// <summary>Where a buffer of <paramref name="bytes"/> goes; managed bytes are counted until <see cref="Release"/>.</summary>
    public StatePlacement Place(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (_used + bytes > _budget) return StatePlacement.HostMapped;
        _used += bytes;
        return StatePlacement.Managed;
    }

    /// <summary>Gives back a managed buffer's bytes.</summary>
    public void Release(StatePlacement placement, long bytes)
    {
        if (placement == StatePlacement.Managed) _used = Math.Max(0, _used - bytes);
    }
}

/// <summary>
/// Memory the host and the GPU both address, for optimizer state: unified (managed) memory, which the driver migrates
/// and may evict, or pinned host memory mapped into the device. <see cref="HostStorage.Pointer"/> waits for the device's
/// queued work first (so a checkpoint reads finished state); kernels use <see cref="DeviceAddress"/>.
/// </summary>
internal sealed unsafe class CudaHostVisibleStorage : HostStorage
{
    private readonly CudaContext _context;
    private readonly byte* _host;
    private int _freed;

    private CudaHostVisibleStorage(CudaContext context, long byteLength, byte* host, ulong deviceAddress, StatePlacement placement)
        : base(byteLength)
    {
        _context = context;
        _host = host;
        DeviceAddress = deviceAddress;
        Placement = placement;
    }

    /// <summary>The address kernels use.</summary>
    public ulong DeviceAddress { get; }

    /// <summary>Managed or mapped host memory.</summary>
    public StatePlacement Placement { get; }

    /// <summary>The host address, after the device finished the work queued so far.</summary>
    public override byte* Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _freed) != 0, this);
            _context.Synchronize();
            return _host;
        }
    }

    /// <summary>
    /// Zero-filled state of <paramref name="bytes"/> bytes for <paramref name="device"/>. Paged state is placed by the
    /// device's <see cref="PagedStateBudget"/>; unpaged state is managed memory prefetched to the device.
    /// </summary>
    public static CudaHostVisibleStorage Allocate(Device device, long bytes, bool paged)
    {
        var context = CudaContext.Get(device.Index);
        var placement = paged ? CudaPagedMemory.Budget(context).Place(bytes) : StatePlacement.Managed;
        var (host, address) = CudaPagedMemory.AllocateRaw(context, bytes, placement, prefetch: !paged);
        return new CudaHostVisibleStorage(context, bytes, (byte*)host, address, placement);
    }

    protected override void Free()
    {
        if (Interlocked.Exchange(ref _freed, 1) != 0) return;
        CudaPagedMemory.FreeRaw(_context, (IntPtr)_host, Placement, ByteLength);
    }
}

/// <summary>Paged optimizer state on a GPU (bitsandbytes' paged optimizers), placed by <see cref="PagedStatePolicy"/>.</summary>
internal static unsafe class CudaPagedMemory
{
    private static readonly Dictionary<int, PagedStateBudget> s_budgets = [];
    private static readonly Lock s_lock = new();

    /// <summary>The budget of <paramref name="context"/>'s device, taken from its free memory on first use.</summary>
    public static PagedStateBudget Budget(CudaContext context)
    {
        lock (s_lock)
        {
            if (!s_budgets.TryGetValue(context.Info.Ordinal, out var budget))
            {
                var (free, total) = context.MemoryInfo();
                s_budgets[context.Info.Ordinal] = budget = new PagedStateBudget(free, total);
            }
            return budget;
        }
    }

    /// <summary>A zero-filled, unscoped float32 CUDA tensor on paged memory (managed, or mapped host memory past the budget).</summary>
    public static Tensor Zeros(Device device, int[] shape)
    {
        ShapeUtil.Validate(shape);
        long bytes = ShapeUtil.Count(shape) * sizeof(float);
        var context = CudaContext.Get(device.Index);
        var placement = Budget(context).Place(bytes);
        var (_, address) = AllocateRaw(context, bytes, placement, prefetch: false);
        var storage = new CudaStorage(device, bytes, address, placement, _ => FreeRaw(context, (IntPtr)(long)address, placement, bytes));
        return Tensor.OnStorage(storage, shape, DType.Float32, scoped: false);
    }

    /// <summary>Allocates and zero-fills; returns the host pointer and the device address (equal for managed memory).</summary>
    internal static (IntPtr Host, ulong Device) AllocateRaw(CudaContext context, long bytes, StatePlacement placement, bool prefetch)
    {
        long size = Math.Max(bytes, 1);
        context.MakeCurrent();
        if (placement == StatePlacement.Managed)
        {
            ulong pointer;
            CudaErrors.Check(CudaDriver.MemAllocManaged(&pointer, (nuint)size, CudaDriver.MemAttachGlobal), $"cuMemAllocManaged({size:N0} bytes)");
            CudaErrors.Check(CudaDriver.MemsetD8Async(pointer, 0, (nuint)size, context.Stream), "cuMemsetD8Async(managed state)");
            if (prefetch && context.Info.ConcurrentManagedAccess)
                CudaErrors.Check(CudaDriver.MemPrefetchAsync(pointer, (nuint)size, context.Info.Ordinal, context.Stream), "cuMemPrefetchAsync(state → device)");
            return ((IntPtr)(long)pointer, pointer);
        }
        void* host;
        CudaErrors.Check(CudaDriver.MemHostAlloc(&host, (nuint)size, CudaDriver.MemHostAllocDeviceMap), $"cuMemHostAlloc({size:N0} bytes, DEVICEMAP)");
        NativeMemory.Clear(host, (nuint)size);
        ulong device;
        CudaErrors.Check(CudaDriver.MemHostGetDevicePointer(&device, host, 0), "cuMemHostGetDevicePointer");
        return ((IntPtr)host, device);
    }

    /// <summary>Frees memory from <see cref="AllocateRaw"/> after the device's queued work (which may still use it).</summary>
    internal static void FreeRaw(CudaContext context, IntPtr host, StatePlacement placement, long bytes)
    {
        context.MakeCurrent();
        context.Synchronize();
        if (placement == StatePlacement.Managed)
            CudaErrors.Check(CudaDriver.MemFree((ulong)(long)host), "cuMemFree(managed state)");
        else
            CudaErrors.Check(CudaDriver.MemFreeHost((void*)host), "cuMemFreeHost(mapped state)");
        lock (s_lock)
            if (s_budgets.TryGetValue(context.Info.Ordinal, out var budget)) budget.Release(placement, bytes);
    }
}
