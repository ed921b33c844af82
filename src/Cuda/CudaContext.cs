using System.Runtime.InteropServices;
using System.Text;
using PeftGen.Backends.Cuda.Native;

namespace PeftGen.Backends.Cuda;

/// <summary>
/// One device's primary context with a stream, a caching allocator, a cuBLAS handle and the compiled kernel modules.
/// Kernels are compiled by NVRTC at first use for the device's architecture and cached on disk (<see cref="KernelCache"/>).
/// All work is queued on <see cref="Stream"/>; reading results back synchronises it.
/// </summary>
internal sealed unsafe class CudaContext : IDisposable
{
    private static readonly Lock s_lock = new();
    private static readonly Dictionary<int, CudaContext> s_contexts = [];

    private readonly KernelFunctionTable<CudaModule> _functions;
    private readonly Lock _cublasLock = new();
    private readonly KernelCache _cache;
    private readonly IReadOnlyList<string> _options;
    private IntPtr _cublas;
    private bool _disposed;

    private CudaContext(int ordinal)
    {
        Info = CudaDevices.Info(ordinal);
        int device;
        CudaErrors.Check(CudaDriver.DeviceGet(&device, ordinal), $"cuDeviceGet({ordinal})");
        IntPtr context;
        CudaErrors.Check(CudaDriver.DevicePrimaryCtxRetain(&context, device), $"cuDevicePrimaryCtxRetain({ordinal})");
        Handle = context;
        MakeCurrent();
        IntPtr stream;
        CudaErrors.Check(CudaDriver.StreamCreate(&stream, CudaDriver.StreamNonBlocking), "cuStreamCreate");
        Stream = stream;
        Allocator = new CudaCachingAllocator(new DriverMemory());
        _options = NvrtcCompiler.Options(Info.Major, Info.Minor);
        _cache = new KernelCache(KernelCache.DefaultDirectory(Environment.GetEnvironmentVariable,
            Environment.GetFolderPath(Environment.SpecialFolder.UserProfile)), NvrtcCompiler.Compile, NvrtcCompiler.Version());
        _functions = new KernelFunctionTable<CudaModule>(LoadModule, GetFunction);
    }

    /// <summary>The device.</summary>
    public CudaDeviceInfo Info { get; }

    /// <summary>The primary context.</summary>
    public IntPtr Handle { get; }

    /// <summary>The stream all work of this context is queued on.</summary>
    public IntPtr Stream { get; }

    /// <summary>Device memory for tensors.</summary>
    public CudaCachingAllocator Allocator { get; }

    /// <summary>The kernel cache (hits and misses tell whether kernels were compiled this run).</summary>
    public KernelCache KernelCache => _cache;

    /// <summary>The context of device <paramref name="ordinal"/>, created on first use.</summary>
    /// <exception cref="CudaNotAvailableException">CUDA or that device is not available.</exception>
    public static CudaContext Get(int ordinal)
    {
        lock (s_lock)
        {
            if (!s_contexts.TryGetValue(ordinal, out var context)) s_contexts[ordinal] = context = new CudaContext(ordinal);
            context.MakeCurrent();
            return context;
        }
    }

    /// <summary>Makes this context current on the calling thread (the driver API's contexts are per thread).</summary>
    public void MakeCurrent() => CudaErrors.Check(CudaDriver.CtxSetCurrent(Handle), "cuCtxSetCurrent");

    /// <summary>The cuBLAS handle, bound to <see cref="Stream"/>.</summary>
    public IntPtr Cublas
    {
        get
        {
            lock (_cublasLock)
            {
                if (_cublas != IntPtr.Zero) return _cublas;
                IntPtr handle;
                CudaErrors.CheckCublas(Native.Cublas.Create(&handle), "cublasCreate");
                CudaErrors.CheckCublas(Native.Cublas.SetStream(handle, Stream), "cublasSetStream");
                return _cublas = handle;
            }
        }
    }

    /// <summary>Waits for all work queued on the stream.</summary>
    public void Synchronize() => CudaErrors.Check(CudaDriver.StreamSynchronize(Stream), "cuStreamSynchronize");

    /// <summary>Free and total device memory now.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        nuint free, total;
        CudaErrors.Check(CudaDriver.MemGetInfo(&free, &total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    /// <summary>Copies host bytes to the device (queued; the source must stay valid until the stream reaches it).</summary>
    public void CopyToDevice(ulong destination, void* source, long bytes) =>
        CudaErrors.Check(CudaDriver.MemcpyHtoDAsync(destination, source, (nuint)bytes, Stream), $"cuMemcpyHtoDAsync({bytes:N0} bytes)");

    /// <summary>Copies device bytes to the host and waits for them.</summary>
    public void CopyToHost(void* destination, ulong source, long bytes)
    {
        CudaErrors.Check(CudaDriver.MemcpyDtoHAsync(destination, source, (nuint)bytes, Stream), $"cuMemcpyDtoHAsync({bytes:N0} bytes)");
        Synchronize();
    }

    /// <summary>A device copy of <paramref name="data"/> (synchronous: the managed array is not pinned afterwards).</summary>
    public DeviceBlock Upload<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        var block = Allocator.Allocate(Math.Max(1, data.Length * sizeof(T)), Stream);
        fixed (T* p = data)
        {
            CopyToDevice(block.Pointer, p, (long)data.Length * sizeof(T));
            Synchronize();
        }
        return block;
    }

    /// <summary>The first <paramref name="count"/> elements of a device buffer.</summary>
    public T[] Download<T>(ulong source, int count) where T : unmanaged
    {
        var result = new T[count];
        fixed (T* p = result) CopyToHost(p, source, (long)count * sizeof(T));
        return result;
    }

    /// <summary>The kernel <paramref name="name"/> of <paramref name="module"/>, compiling and loading the module on first use (thread-safe).</summary>
    public IntPtr Function(CudaModule module, string name) => _functions.Get(module, name);

    private IntPtr LoadModule(CudaModule module)
    {
        string arch = NvrtcCompiler.Architecture(Info.Major, Info.Minor);
        var image = _cache.GetOrCompile(Path.GetFileNameWithoutExtension(CudaKernelSources.FileName(module)),
            CudaKernelSources.Source(module), arch, _options);
        IntPtr handle;
        MakeCurrent(); // the driver's current context is per thread
        fixed (byte* i = image)
            CudaErrors.Check(CudaDriver.ModuleLoadData(&handle, i), $"cuModuleLoadData({CudaKernelSources.FileName(module)}, {arch})");
        return handle;
    }

    private static IntPtr GetFunction(IntPtr module, string name)
    {
        IntPtr function;
        var nameBytes = Encoding.ASCII.GetBytes(name + "\0");
        fixed (byte* n = nameBytes)
            CudaErrors.Check(CudaDriver.ModuleGetFunction(&function, module, n), $"cuModuleGetFunction({name})");
        return function;
    }

    /// <summary>
    /// Launches kernel <paramref name="name"/> with <paramref name="config"/>; <paramref name="arguments"/> are pointers to
    /// each argument's value, in the kernel's parameter order.
    /// </summary>
    public void Launch(CudaModule module, string name, LaunchConfig config, ReadOnlySpan<IntPtr> arguments)
    {
        config.Validate(name);
        var function = Function(module, name);
        if (config.SharedBytes > 48 * 1024)
            CudaErrors.Check(CudaDriver.FuncSetAttribute(function, CudaDriver.FuncAttributeMaxDynamicSharedSizeBytes, config.SharedBytes),
                $"cuFuncSetAttribute({name}, {config.SharedBytes} bytes of shared memory)");
        fixed (IntPtr* args = arguments)
            CudaErrors.Check(CudaDriver.LaunchKernel(function, (uint)config.GridX, (uint)config.GridY, 1, (uint)config.BlockX, 1, 1,
                (uint)config.SharedBytes, Stream, (void**)args, null), $"cuLaunchKernel({name}, grid {config.GridX}x{config.GridY}, block {config.BlockX})");
    }

    /// <summary>Releases the stream, modules, cuBLAS handle, cached memory and the primary context.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        MakeCurrent();
        Synchronize();
        if (_cublas != IntPtr.Zero) Native.Cublas.Destroy(_cublas);
        foreach (var module in _functions.LoadedModules) CudaDriver.ModuleUnload(module);
        Allocator.Dispose();
        CudaDriver.StreamDestroy(Stream);
        CudaDriver.DevicePrimaryCtxRelease(Info.Ordinal);
        lock (s_lock) s_contexts.Remove(Info.Ordinal);
    }

    /// <summary>cuMemAlloc / cuMemFree behind the caching allocator.</summary>
    private sealed class DriverMemory : IDeviceMemory
    {
        public ulong Allocate(long bytes)
        {
            ulong pointer;
            CudaErrors.Check(CudaDriver.MemAlloc(&pointer, (nuint)bytes), $"cuMemAlloc({bytes:N0} bytes)");
            return pointer;
        }

        public void Free(ulong pointer) => CudaErrors.Check(CudaDriver.MemFree(pointer), "cuMemFree");
    }
}
