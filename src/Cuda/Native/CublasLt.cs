using System.Runtime.InteropServices;

namespace PeftGen.Backends.Cuda.Native;

/// <summary>
/// cuBLASLt (<c>libcublasLt.so</c>, <c>cublasLt.h</c>): GEMMs described by descriptors, with heuristics that pick an
/// algorithm per shape. Used for bf16 × bf16 → float32 GEMMs with float32 accumulation. Functions return
/// <c>cublasStatus_t</c> (0 = success).
/// </summary>
internal static unsafe partial class CublasLt
{
    private const string Lib = CudaNativeLibraries.CublasLtName;

    /// <summary><c>CUBLASLT_MATMUL_DESC_TRANSA</c>.</summary>
    public const int MatmulDescTransA = 3;

    /// <summary><c>CUBLASLT_MATMUL_DESC_TRANSB</c>.</summary>
    public const int MatmulDescTransB = 4;

    /// <summary><c>CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT</c>.</summary>
    public const int MatrixLayoutBatchCount = 5;

    /// <summary><c>CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET</c>.</summary>
    public const int MatrixLayoutStridedBatchOffset = 6;

    /// <summary><c>CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES</c>.</summary>
    public const int PreferenceMaxWorkspaceBytes = 1;

    [LibraryImport(Lib, EntryPoint = "cublasLtCreate")]
    public static partial int Create(IntPtr* handle);

    [LibraryImport(Lib, EntryPoint = "cublasLtDestroy")]
    public static partial int Destroy(IntPtr handle);

    [LibraryImport(Lib, EntryPoint = "cublasLtGetVersion")]
    public static partial nuint GetVersion();

    [LibraryImport(Lib, EntryPoint = "cublasLtMatmulDescCreate")]
    public static partial int MatmulDescCreate(IntPtr* desc, int computeType, int scaleType);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatmulDescDestroy")]
    public static partial int MatmulDescDestroy(IntPtr desc);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatmulDescSetAttribute")]
    public static partial int MatmulDescSetAttribute(IntPtr desc, int attribute, void* value, nuint size);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatrixLayoutCreate")]
    public static partial int MatrixLayoutCreate(IntPtr* layout, int type, ulong rows, ulong cols, long ld);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatrixLayoutDestroy")]
    public static partial int MatrixLayoutDestroy(IntPtr layout);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatrixLayoutSetAttribute")]
    public static partial int MatrixLayoutSetAttribute(IntPtr layout, int attribute, void* value, nuint size);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatmulPreferenceCreate")]
    public static partial int MatmulPreferenceCreate(IntPtr* preference);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatmulPreferenceDestroy")]
    public static partial int MatmulPreferenceDestroy(IntPtr preference);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatmulPreferenceSetAttribute")]
    public static partial int MatmulPreferenceSetAttribute(IntPtr preference, int attribute, void* value, nuint size);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatmulAlgoGetHeuristic")]
    public static partial int MatmulAlgoGetHeuristic(IntPtr handle, IntPtr operationDesc, IntPtr aDesc, IntPtr bDesc, IntPtr cDesc,
        IntPtr dDesc, IntPtr preference, int requestedCount, HeuristicResult* results, int* returnedCount);

    [LibraryImport(Lib, EntryPoint = "cublasLtMatmul")]
    public static partial int Matmul(IntPtr handle, IntPtr computeDesc, void* alpha, ulong a, IntPtr aDesc, ulong b, IntPtr bDesc,
        void* beta, ulong c, IntPtr cDesc, ulong d, IntPtr dDesc, MatmulAlgo* algo, ulong workspace, nuint workspaceBytes, IntPtr stream);

    /// <summary><c>cublasLtMatmulAlgo_t</c>: 8 opaque 64-bit words.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MatmulAlgo
    {
        /// <summary>The opaque words.</summary>
        public fixed ulong Data[8];
    }

    /// <summary><c>cublasLtMatmulHeuristicResult_t</c> (96 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct HeuristicResult
    {
        /// <summary>The algorithm to pass to <see cref="Matmul"/>.</summary>
        public MatmulAlgo Algo;

        /// <summary>Workspace bytes it needs.</summary>
        public nuint WorkspaceSize;

        /// <summary>0 when the algorithm is usable.</summary>
        public int State;

        /// <summary>Waves of the GPU it occupies (cuBLASLt's estimate).</summary>
        public float WavesCount;

        /// <summary>Reserved by cuBLASLt.</summary>
        public fixed int Reserved[4];
    }
}
