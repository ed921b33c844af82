using System.Runtime.InteropServices;

namespace PeftGen.Backends.Cuda.Native;

/// <summary>
/// The subset of the CUDA driver API (<c>libcuda.so.1</c>, <c>cuda.h</c>) the backend uses. Every function returns a
/// <c>CUresult</c> (0 = success) that callers pass to <see cref="CudaErrors.Check"/>. Handles (contexts, streams,
/// events, modules, functions) are opaque pointers; device addresses (<c>CUdeviceptr</c>) are 64-bit integers.
/// Versioned entry points (<c>_v2</c>) are the ones <c>cuda.h</c> maps the plain names to.
/// </summary>
internal static unsafe partial class CudaDriver
{
    private const string Lib = CudaNativeLibraries.DriverName;

    /// <summary>Device attribute: maximum threads per block.</summary>
    public const int AttributeMaxThreadsPerBlock = 1;

    /// <summary>Device attribute: maximum shared memory per block (bytes).</summary>
    public const int AttributeMaxSharedMemoryPerBlock = 8;

    /// <summary>Device attribute: warp size.</summary>
    public const int AttributeWarpSize = 10;

    /// <summary>Device attribute: number of multiprocessors.</summary>
    public const int AttributeMultiprocessorCount = 16;

    /// <summary>Device attribute: compute capability major.</summary>
    public const int AttributeComputeCapabilityMajor = 75;

    /// <summary>Device attribute: compute capability minor.</summary>
    public const int AttributeComputeCapabilityMinor = 76;

    /// <summary>Device attribute: opt-in maximum shared memory per block (bytes).</summary>
    public const int AttributeMaxSharedMemoryPerBlockOptin = 97;

    /// <summary>Device attribute: concurrent managed memory access (1 when unified memory can page on demand).</summary>
    public const int AttributeConcurrentManagedAccess = 89;

    /// <summary><c>CU_MEM_ATTACH_GLOBAL</c>: managed memory any stream may access.</summary>
    public const uint MemAttachGlobal = 1;

    /// <summary><c>CU_STREAM_NON_BLOCKING</c>: no implicit synchronisation with the legacy default stream.</summary>
    public const uint StreamNonBlocking = 1;

    /// <summary><c>CU_EVENT_DISABLE_TIMING</c>: an event only for ordering (cheaper).</summary>
    public const uint EventDisableTiming = 2;

    /// <summary><c>CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES</c>.</summary>
    public const int FuncAttributeMaxDynamicSharedSizeBytes = 8;

    /// <summary><c>CU_DEVICE_CPU</c>: the host as a prefetch destination.</summary>
    public const int DeviceCpu = -1;

    [LibraryImport(Lib, EntryPoint = "cuInit")]
    public static partial int Init(uint flags);

    [LibraryImport(Lib, EntryPoint = "cuDriverGetVersion")]
    public static partial int DriverGetVersion(int* version);

    [LibraryImport(Lib, EntryPoint = "cuGetErrorName")]
    public static partial int GetErrorName(int error, byte** name);

    [LibraryImport(Lib, EntryPoint = "cuGetErrorString")]
    public static partial int GetErrorString(int error, byte** text);

    [LibraryImport(Lib, EntryPoint = "cuDeviceGetCount")]
    public static partial int DeviceGetCount(int* count);

    [LibraryImport(Lib, EntryPoint = "cuDeviceGet")]
    public static partial int DeviceGet(int* device, int ordinal);

    [LibraryImport(Lib, EntryPoint = "cuDeviceGetName")]
    public static partial int DeviceGetName(byte* name, int length, int device);

    [LibraryImport(Lib, EntryPoint = "cuDeviceGetAttribute")]
    public static partial int DeviceGetAttribute(int* value, int attribute, int device);

    [LibraryImport(Lib, EntryPoint = "cuDeviceTotalMem_v2")]
    public static partial int DeviceTotalMem(nuint* bytes, int device);

    [LibraryImport(Lib, EntryPoint = "cuDevicePrimaryCtxRetain")]
    public static partial int DevicePrimaryCtxRetain(IntPtr* context, int device);

    [LibraryImport(Lib, EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
    public static partial int DevicePrimaryCtxRelease(int device);

    [LibraryImport(Lib, EntryPoint = "cuCtxSetCurrent")]
    public static partial int CtxSetCurrent(IntPtr context);

    [LibraryImport(Lib, EntryPoint = "cuCtxSynchronize")]
    public static partial int CtxSynchronize();

    [LibraryImport(Lib, EntryPoint = "cuMemGetInfo_v2")]
    public static partial int MemGetInfo(nuint* free, nuint* total);

    [LibraryImport(Lib, EntryPoint = "cuMemAlloc_v2")]
    public static partial int MemAlloc(ulong* pointer, nuint bytes);

    [LibraryImport(Lib, EntryPoint = "cuMemFree_v2")]
    public static partial int MemFree(ulong pointer);

    [LibraryImport(Lib, EntryPoint = "cuMemAllocManaged")]
    public static partial int MemAllocManaged(ulong* pointer, nuint bytes, uint flags);

    [LibraryImport(Lib, EntryPoint = "cuMemPrefetchAsync")]
    public static partial int MemPrefetchAsync(ulong pointer, nuint bytes, int destinationDevice, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuMemAllocHost_v2")]
    public static partial int MemAllocHost(void** pointer, nuint bytes);

    [LibraryImport(Lib, EntryPoint = "cuMemFreeHost")]
    public static partial int MemFreeHost(void* pointer);

    /// <summary><c>CU_MEMHOSTALLOC_DEVICEMAP</c>: host memory the device can address.</summary>
    public const uint MemHostAllocDeviceMap = 2;

    [LibraryImport(Lib, EntryPoint = "cuMemHostAlloc")]
    public static partial int MemHostAlloc(void** pointer, nuint bytes, uint flags);

    [LibraryImport(Lib, EntryPoint = "cuMemHostGetDevicePointer_v2")]
    public static partial int MemHostGetDevicePointer(ulong* devicePointer, void* hostPointer, uint flags);

    [LibraryImport(Lib, EntryPoint = "cuMemcpyHtoDAsync_v2")]
    public static partial int MemcpyHtoDAsync(ulong destination, void* source, nuint bytes, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuMemcpyDtoHAsync_v2")]
    public static partial int MemcpyDtoHAsync(void* destination, ulong source, nuint bytes, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuMemcpyDtoDAsync_v2")]
    public static partial int MemcpyDtoDAsync(ulong destination, ulong source, nuint bytes, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuMemsetD8Async")]
    public static partial int MemsetD8Async(ulong destination, byte value, nuint count, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuMemsetD32Async")]
    public static partial int MemsetD32Async(ulong destination, uint value, nuint count, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuStreamCreate")]
    public static partial int StreamCreate(IntPtr* stream, uint flags);

    [LibraryImport(Lib, EntryPoint = "cuStreamDestroy_v2")]
    public static partial int StreamDestroy(IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuStreamSynchronize")]
    public static partial int StreamSynchronize(IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuStreamWaitEvent")]
    public static partial int StreamWaitEvent(IntPtr stream, IntPtr @event, uint flags);

    [LibraryImport(Lib, EntryPoint = "cuEventCreate")]
    public static partial int EventCreate(IntPtr* @event, uint flags);

    [LibraryImport(Lib, EntryPoint = "cuEventRecord")]
    public static partial int EventRecord(IntPtr @event, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cuEventQuery")]
    public static partial int EventQuery(IntPtr @event);

    [LibraryImport(Lib, EntryPoint = "cuEventSynchronize")]
    public static partial int EventSynchronize(IntPtr @event);

    [LibraryImport(Lib, EntryPoint = "cuEventElapsedTime")]
    public static partial int EventElapsedTime(float* milliseconds, IntPtr start, IntPtr end);

    [LibraryImport(Lib, EntryPoint = "cuEventDestroy_v2")]
    public static partial int EventDestroy(IntPtr @event);

    [LibraryImport(Lib, EntryPoint = "cuModuleLoadData")]
    public static partial int ModuleLoadData(IntPtr* module, void* image);

    [LibraryImport(Lib, EntryPoint = "cuModuleGetFunction")]
    public static partial int ModuleGetFunction(IntPtr* function, IntPtr module, byte* name);

    [LibraryImport(Lib, EntryPoint = "cuModuleUnload")]
    public static partial int ModuleUnload(IntPtr module);

    [LibraryImport(Lib, EntryPoint = "cuFuncSetAttribute")]
    public static partial int FuncSetAttribute(IntPtr function, int attribute, int value);

    [LibraryImport(Lib, EntryPoint = "cuLaunchKernel")]
    public static partial int LaunchKernel(IntPtr function, uint gridX, uint gridY, uint gridZ,
        uint blockX, uint blockY, uint blockZ, uint sharedMemoryBytes, IntPtr stream, void** kernelParams, void** extra);
}
