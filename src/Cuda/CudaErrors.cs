using System.Runtime.InteropServices;
using PeftGen.Backends.Cuda.Native;

namespace PeftGen.Backends.Cuda;

/// <summary>
/// Turns status codes into exceptions. Driver errors are named by <c>cuGetErrorName</c> / <c>cuGetErrorString</c>
/// when the driver is loaded, otherwise from a built-in table of the common codes; cuBLAS and NVRTC codes from their
/// headers' tables (NVRTC's own <c>nvrtcGetErrorString</c> when loaded). Out-of-memory becomes
/// <see cref="CudaOutOfMemoryException"/>; "no device / no driver" codes become <see cref="CudaNotAvailableException"/>.
/// </summary>
internal static unsafe class CudaErrors
{
    /// <summary>Looks up a driver status's (name, description); null parts fall back to the built-in table.</summary>
    internal delegate (string? Name, string? Description) DriverNameLookup(int code);

    /// <summary>The lookup used by <see cref="Check"/>: the loaded driver's, or none before it is loaded.</summary>
    internal static DriverNameLookup? DriverLookup { get; set; }

    /// <summary><c>CUDA_ERROR_OUT_OF_MEMORY</c>.</summary>
    public const int OutOfMemory = 2;

    /// <summary><c>CUDA_ERROR_NO_DEVICE</c>.</summary>
    public const int NoDevice = 100;

    // cuda.h: the codes a user is likely to meet, with advice where there is some.
    private static readonly Dictionary<int, (string Name, string Description)> s_driver = new()
    {
        [1] = ("CUDA_ERROR_INVALID_VALUE", "an argument was out of range"),
        [2] = ("CUDA_ERROR_OUT_OF_MEMORY", "out of GPU memory; use a smaller batch or sequence length, gradient checkpointing, or a paged optimizer"),
        [3] = ("CUDA_ERROR_NOT_INITIALIZED", "cuInit was not called"),
        [4] = ("CUDA_ERROR_DEINITIALIZED", "the driver is shutting down"),
        [34] = ("CUDA_ERROR_STUB_LIBRARY", "the libcuda.so found is the toolkit's link stub, not the driver; install the NVIDIA driver or remove the stubs folder from the search path"),
        [35] = ("CUDA_ERROR_INSUFFICIENT_DRIVER", "the installed NVIDIA driver is older than this CUDA version needs; update the driver"),
        [46] = ("CUDA_ERROR_DEVICE_UNAVAILABLE", "the device is busy or unavailable (exclusive-process mode?)"),
        [100] = ("CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"),
        [101] = ("CUDA_ERROR_INVALID_DEVICE", "no device with that ordinal"),
        [200] = ("CUDA_ERROR_INVALID_IMAGE", "the kernel image is invalid; delete the kernel cache folder and retry"),
        [201] = ("CUDA_ERROR_INVALID_CONTEXT", "no current context on this thread"),
        [209] = ("CUDA_ERROR_NO_BINARY_FOR_GPU", "the kernel image was built for another GPU architecture; delete the kernel cache folder and retry"),
        [218] = ("CUDA_ERROR_INVALID_PTX", "the driver could not compile the PTX"),
        [222] = ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "NVRTC is newer than the driver; update the driver or use an older NVRTC"),
        [400] = ("CUDA_ERROR_INVALID_HANDLE", "an invalid stream, event, module or function handle"),
        [500] = ("CUDA_ERROR_NOT_FOUND", "a named kernel or symbol was not found in the module"),
        [600] = ("CUDA_ERROR_NOT_READY", "the asynchronous work has not completed yet"),
        [700] = ("CUDA_ERROR_ILLEGAL_ADDRESS", "a kernel accessed invalid memory; the context is unusable and the process must restart"),
        [701] = ("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many registers or too much shared memory for this launch"),
        [702] = ("CUDA_ERROR_LAUNCH_TIMEOUT", "a kernel ran too long (display watchdog)"),
        [719] = ("CUDA_ERROR_LAUNCH_FAILED", "a kernel failed; the context is unusable and the process must restart"),
        [801] = ("CUDA_ERROR_NOT_SUPPORTED", "the operation is not supported on this device or system"),
        [803] = ("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "the driver's user-space library and kernel module versions differ; reboot or reinstall the driver"),
        [804] = ("CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", "forward-compatibility libraries do not support this device"),
        [999] = ("CUDA_ERROR_UNKNOWN", "an unknown error"),
    };

    // cublas_api.h: cublasStatus_t.
    private static readonly Dictionary<int, (string Name, string Description)> s_cublas = new()
    {
        [1] = ("CUBLAS_STATUS_NOT_INITIALIZED", "the cuBLAS handle is not initialised (no current CUDA context?)"),
        [3] = ("CUBLAS_STATUS_ALLOC_FAILED", "cuBLAS could not allocate its workspace; the GPU is out of memory"),
        [7] = ("CUBLAS_STATUS_INVALID_VALUE", "an unsupported value or parameter (a leading dimension, type or transpose)"),
        [8] = ("CUBLAS_STATUS_ARCH_MISMATCH", "the GPU lacks a feature this call needs (bf16 needs compute capability 8.0+)"),
        [11] = ("CUBLAS_STATUS_MAPPING_ERROR", "access to GPU memory failed"),
        [13] = ("CUBLAS_STATUS_EXECUTION_FAILED", "the GPU program failed to run"),
        [14] = ("CUBLAS_STATUS_INTERNAL_ERROR", "an internal cuBLAS operation failed"),
        [15] = ("CUBLAS_STATUS_NOT_SUPPORTED", "the requested functionality is not supported"),
        [16] = ("CUBLAS_STATUS_LICENSE_ERROR", "a licence check failed"),
    };

    // nvrtc.h: nvrtcResult.
    private static readonly Dictionary<int, (string Name, string Description)> s_nvrtc = new()
    {
        [1] = ("NVRTC_ERROR_OUT_OF_MEMORY", "NVRTC ran out of host memory"),
        [2] = ("NVRTC_ERROR_PROGRAM_CREATION_FAILURE", "the program could not be created"),
        [3] = ("NVRTC_ERROR_INVALID_INPUT", "an invalid argument"),
        [4] = ("NVRTC_ERROR_INVALID_PROGRAM", "an invalid program handle"),
        [5] = ("NVRTC_ERROR_INVALID_OPTION", "an invalid compiler option (an architecture this NVRTC does not know?)"),
        [6] = ("NVRTC_ERROR_COMPILATION", "the source did not compile; see the compiler log"),
        [7] = ("NVRTC_ERROR_BUILTIN_OPERATION_FAILURE", "a built-in operation failed"),
        [11] = ("NVRTC_ERROR_INTERNAL_ERROR", "an internal NVRTC error"),
    };

    /// <summary>Throws when a driver call returned anything but CUDA_SUCCESS.</summary>
    /// <param name="result">The <c>CUresult</c>.</param>
    /// <param name="call">What was called, for the message ("cuMemAlloc(1,048,576 bytes)").</param>
    public static void Check(int result, string call)
    {
        if (result != 0) throw DriverError(result, call);
    }

    /// <summary>The exception for a failed driver call (the result is not checked for success).</summary>
    public static Exception DriverError(int result, string call)
    {
        var (name, description) = DescribeDriver(result);
        return result switch
        {
            OutOfMemory => new CudaOutOfMemoryException("CUDA driver", call, result, name, description),
            NoDevice or 34 or 35 or 803 or 804 => new CudaNotAvailableException(
                $"CUDA is not available: {call} failed with {name} ({result}): {description}. Without a GPU, use the CPU (--device cpu)."),
            _ => new CudaException("CUDA driver", call, result, name, description),
        };
    }

    /// <summary>Throws when a cuBLAS or cuBLASLt call returned anything but CUBLAS_STATUS_SUCCESS.</summary>
    /// <param name="status">The <c>cublasStatus_t</c>.</param>
    /// <param name="call">What was called.</param>
    public static void CheckCublas(int status, string call)
    {
        if (status == 0) return;
        var (name, description) = s_cublas.TryGetValue(status, out var known) ? known : ($"CUBLAS_STATUS_{status}", "an unknown cuBLAS status");
        throw status == 3
            ? new CudaOutOfMemoryException("cuBLAS", call, status, name, description)
            : new CudaException("cuBLAS", call, status, name, description);
    }

    /// <summary>Throws when an NVRTC call returned anything but NVRTC_SUCCESS.</summary>
    /// <param name="result">The <c>nvrtcResult</c>.</param>
    /// <param name="call">What was called.</param>
    /// <param name="log">The compiler log, appended to the message when not empty.</param>
    public static void CheckNvrtc(int result, string call, string? log = null)
    {
        if (result == 0) return;
        var (name, description) = s_nvrtc.TryGetValue(result, out var known) ? known : ($"NVRTC_ERROR_{result}", "an unknown NVRTC status");
        if (!string.IsNullOrWhiteSpace(log)) description += ":\n" + log.TrimEnd();
        throw new CudaException("NVRTC", call, result, name, description);
    }

    /// <summary>The (name, description) of a driver status: the driver's own words when loaded, else the built-in table.</summary>
    public static (string Name, string Description) DescribeDriver(int result)
    {
        var (name, description) = DriverLookup?.Invoke(result) ?? (null, null);
        s_driver.TryGetValue(result, out var known);
        name ??= known.Name ?? $"CUresult {result}";
        // Our advice is more useful than the driver's bare sentence where we have some.
        description = known.Description ?? description ?? "an unknown CUDA driver error";
        return (name, description);
    }

    /// <summary>The lookup through the loaded driver's cuGetErrorName / cuGetErrorString.</summary>
    public static (string? Name, string? Description) LookupInLoadedDriver(int code)
    {
        byte* name = null, text = null;
        string? n = CudaDriver.GetErrorName(code, &name) == 0 && name != null ? Marshal.PtrToStringUTF8((IntPtr)name) : null;
        string? t = CudaDriver.GetErrorString(code, &text) == 0 && text != null ? Marshal.PtrToStringUTF8((IntPtr)text) : null;
        return (n, t);
    }
}
