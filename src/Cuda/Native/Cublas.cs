using System.Runtime.InteropServices;

namespace PeftGen.Backends.Cuda.Native;

/// <summary>
/// cuBLAS (<c>libcublas.so</c>, <c>cublas_api.h</c>), column-major. The backend computes a row-major C = A·B as the
/// column-major Cᵀ = Bᵀ·Aᵀ, so operands swap and no data moves. Every function returns a <c>cublasStatus_t</c>
/// (0 = success) checked by <see cref="CudaErrors.CheckCublas"/>.
/// </summary>
internal static unsafe partial class Cublas
{
    private const string Lib = CudaNativeLibraries.CublasName;

    /// <summary><c>CUBLAS_OP_N</c>.</summary>
    public const int OpN = 0;

    /// <summary><c>CUBLAS_OP_T</c>.</summary>
    public const int OpT = 1;

    /// <summary><c>CUDA_R_32F</c> (cudaDataType).</summary>
    public const int DataR32F = 0;

    /// <summary><c>CUDA_R_16F</c>.</summary>
    public const int DataR16F = 2;

    /// <summary><c>CUDA_R_16BF</c>.</summary>
    public const int DataR16BF = 14;

    /// <summary><c>CUBLAS_COMPUTE_32F</c>: float32 accumulation, no reduced-precision inputs.</summary>
    public const int Compute32F = 68;

    /// <summary><c>CUBLAS_COMPUTE_32F_FAST_16BF</c>: float32 data rounded to bf16 for tensor cores, float32 accumulation.</summary>
    public const int Compute32FFast16BF = 75;

    /// <summary><c>CUBLAS_COMPUTE_32F_FAST_TF32</c>.</summary>
    public const int Compute32FFastTF32 = 77;

    /// <summary><c>CUBLAS_GEMM_DEFAULT</c>.</summary>
    public const int GemmDefault = -1;

    /// <summary><c>CUBLAS_DEFAULT_MATH</c>.</summary>
    public const int DefaultMath = 0;

    [LibraryImport(Lib, EntryPoint = "cublasCreate_v2")]
    public static partial int Create(IntPtr* handle);

    [LibraryImport(Lib, EntryPoint = "cublasDestroy_v2")]
    public static partial int Destroy(IntPtr handle);

    [LibraryImport(Lib, EntryPoint = "cublasGetVersion_v2")]
    public static partial int GetVersion(IntPtr handle, int* version);

    [LibraryImport(Lib, EntryPoint = "cublasSetStream_v2")]
    public static partial int SetStream(IntPtr handle, IntPtr stream);

    [LibraryImport(Lib, EntryPoint = "cublasSetWorkspace_v2")]
    public static partial int SetWorkspace(IntPtr handle, ulong workspace, nuint bytes);

    [LibraryImport(Lib, EntryPoint = "cublasSetMathMode")]
    public static partial int SetMathMode(IntPtr handle, int mode);

    [LibraryImport(Lib, EntryPoint = "cublasGemmEx")]
    public static partial int GemmEx(IntPtr handle, int transA, int transB, int m, int n, int k, void* alpha,
        ulong a, int aType, int lda, ulong b, int bType, int ldb, void* beta, ulong c, int cType, int ldc, int computeType, int algo);

    [LibraryImport(Lib, EntryPoint = "cublasGemmStridedBatchedEx")]
    public static partial int GemmStridedBatchedEx(IntPtr handle, int transA, int transB, int m, int n, int k, void* alpha,
        ulong a, int aType, int lda, long strideA, ulong b, int bType, int ldb, long strideB, void* beta,
        ulong c, int cType, int ldc, long strideC, int batchCount, int computeType, int algo);
}
