using System.Runtime.InteropServices;

namespace PeftGen.Benchmarks;

/// <summary>
/// The two OpenBLAS entry points the GEMM benchmark compares against, bound at run time so the
/// benchmark still runs (without a peer) where the library is not installed.
/// </summary>
internal static unsafe class OpenBlas
{
    private const int CblasRowMajor = 101;
    private const int CblasNoTrans = 111;
    private const int CblasTrans = 112;

    // void cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
    private static delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> s_sgemm;
    // void openblas_set_num_threads(int)
    private static delegate* unmanaged<int, void> s_setNumThreads;

    /// <summary>Loads libopenblas.so.0 once; false when it or one of its exports is missing.</summary>
    public static bool TryLoad()
    {
        if (s_sgemm != null) return true;
        if (!NativeLibrary.TryLoad("libopenblas.so.0", out nint library)) return false;
        if (!NativeLibrary.TryGetExport(library, "cblas_sgemm", out nint sgemm)
            || !NativeLibrary.TryGetExport(library, "openblas_set_num_threads", out nint setThreads))
        {
            NativeLibrary.Free(library);
            return false;
        }
        s_sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)sgemm;
        s_setNumThreads = (delegate* unmanaged<int, void>)setThreads;
        return true;
    }

    public static void SetNumThreads(int threads) => s_setNumThreads(threads);

    /// <summary>Row-major cblas_sgemm with the same argument meaning as <c>Sgemm.Multiply</c>.</summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
        => s_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
