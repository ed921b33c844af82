using PeftGen.Backends.Cuda.Native;
using PeftGen.Tensors;

namespace PeftGen.Backends.Cuda;

/// <summary>
/// Tensor storage in GPU memory: a block of the device's <see cref="CudaCachingAllocator"/> (ordinary tensors), or a
/// paged allocation (unified memory or mapped host memory, for paged optimizer state) released by its own callback.
/// When the last tensor lets go, the block returns to the allocator's cache of its stream at once; reuse on that stream
/// is ordered after every kernel already queued, so no synchronisation is needed.
/// </summary>
internal sealed class CudaStorage : TensorStorage
{
    private readonly CudaCachingAllocator? _allocator;
    private readonly DeviceBlock _block;
    private readonly Action<ulong>? _release;
    private int _freed;

    /// <summary>Storage of <paramref name="byteLength"/> bytes from <paramref name="allocator"/>, used on <paramref name="stream"/>.</summary>
    public CudaStorage(Device device, long byteLength, CudaCachingAllocator allocator, IntPtr stream) : base(byteLength, device)
    {
        if (device.Type != DeviceType.Cuda)
            throw new ArgumentException($"CudaStorage needs a CUDA device; got {device}.", nameof(device));
        _allocator = allocator ?? throw new ArgumentNullException(nameof(allocator));
        _block = allocator.Allocate(byteLength, stream);
        Address = _block.Pointer;
        Placement = null;
    }

    /// <summary>Storage at <paramref name="address"/> allocated elsewhere (paged state); <paramref name="release"/> frees it.</summary>
    public CudaStorage(Device device, long byteLength, ulong address, StatePlacement placement, Action<ulong> release) : base(byteLength, device)
    {
        if (device.Type != DeviceType.Cuda)
            throw new ArgumentException($"CudaStorage needs a CUDA device; got {device}.", nameof(device));
        Address = address;
        Placement = placement;
        _release = release ?? throw new ArgumentNullException(nameof(release));
    }

    /// <summary>The device address of the first byte.</summary>
    public ulong Address { get; }

    /// <summary>Where paged storage lives; null for ordinary device memory.</summary>
    public StatePlacement? Placement { get; }

    /// <summary>Device memory for a tensor of <paramref name="bytes"/> bytes on <paramref name="device"/>, zero-filled when asked.</summary>
    /// <exception cref="CudaNotAvailableException">CUDA or the device is not available.</exception>
    /// <exception cref="CudaOutOfMemoryException">The device is out of memory even after releasing the allocator's cache.</exception>
    public static CudaStorage Allocate(Device device, long bytes, bool zeroed)
    {
        var context = CudaContext.Get(device.Index);
        var storage = new CudaStorage(device, bytes, context.Allocator, context.Stream);
        if (zeroed && bytes > 0)
            CudaErrors.Check(CudaDriver.MemsetD8Async(storage.Address, 0, (nuint)bytes, context.Stream), $"cuMemsetD8Async({bytes:N0} bytes)");
        return storage;
    }

    /// <summary>The device address of a tensor's first element (its storage address plus the view's offset).</summary>
    /// <exception cref="InvalidOperationException">The tensor is not on a CUDA device.</exception>
    public static ulong AddressOf(Tensor t)
    {
        if (t.Storage is not CudaStorage storage)
            throw new InvalidOperationException($"{t.DescribeForError()} is on {t.Device}; the CUDA backend needs tensors on a CUDA device: move them with To(device) or MoveTo(device).");
        return storage.Address + (ulong)(t.Offset * t.DType.ElementSize());
    }

    /// <summary>
    /// Copies the elements of dense <paramref name="src"/> into dense <paramref name="dst"/> (same shape and dtype) across
    /// devices: host to device, device to host (waits for the data) or device to device (queued).
    /// </summary>
    /// <exception cref="ArgumentException">The tensors differ in element count or dtype, or one is a strided view.</exception>
    public static unsafe void CopyBetweenDevices(Tensor src, Tensor dst)
    {
        if (src.Count != dst.Count || src.DType != dst.DType || !src.IsContiguous || !dst.IsContiguous)
            throw new ArgumentException($"A copy between devices needs two dense tensors of the same size and dtype; got {src.DescribeForError()} {src.DType} on {src.Device} and {dst.DescribeForError()} {dst.DType} on {dst.Device}.");
        long bytes = src.Count * src.DType.ElementSize();
        if (bytes == 0) return;
        bool srcHost = src.Device.Type == DeviceType.Cpu, dstHost = dst.Device.Type == DeviceType.Cpu;
        if (srcHost && dstHost)
        {
            Buffer.MemoryCopy(src.RawData, dst.RawData, bytes, bytes);
            return;
        }
        if (srcHost)
        {
            var context = CudaContext.Get(dst.Device.Index);
            context.CopyToDevice(AddressOf(dst), src.RawData, bytes);
            context.Synchronize(); // the host buffer may be reused as soon as this returns
            return;
        }
        if (dstHost)
        {
            CudaContext.Get(src.Device.Index).CopyToHost(dst.RawData, AddressOf(src), bytes);
            return;
        }
        if (src.Device != dst.Device)
            throw new NotSupportedException($"Copies between two GPUs ({src.Device} → {dst.Device}) are not supported; go through the host with To(Device.Cpu).");
        var ctx = CudaContext.Get(dst.Device.Index);
        CudaErrors.Check(CudaDriver.MemcpyDtoDAsync(AddressOf(dst), AddressOf(src), (nuint)bytes, ctx.Stream), $"cuMemcpyDtoDAsync({bytes:N0} bytes)");
    }

    protected override void Free()
    {
        if (Interlocked.Exchange(ref _freed, 1) != 0) return;
        if (_allocator != null) _allocator.Free(_block);
        else _release!(Address);
    }
}
