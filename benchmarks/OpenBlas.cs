using System.Runtime.InteropServices;

namespace PeftGen.Benchmarks;

/// <summary>
/// The two OpenBLAS entry points the GEMM benchmark compares against, bound at run time so the
/// benchmark still runs (without a peer) where the library is not installed.
/// </summary>
/// <remarks>
/// The peer runs as its users would: OpenBLAS picks its kernels from the CPU it detects. Some machines export
/// OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for old OpenBLAS builds; the library reads them in its constructor when it
/// is loaded, so <see cref="TryLoad"/> removes them from the native environment first (Environment.SetEnvironmentVariable
/// only changes .NET's copy on Linux). Nothing else in the benchmark process uses OpenBLAS.
/// </remarks>
internal static unsafe partial class OpenBlas
{
    private const int CblasRowMajor = 101;
    private const int CblasNoTrans = 111;
    private const int CblasTrans = 112;

    /// <summary>The settings that override OpenBLAS's own CPU detection.</summary>
    private static readonly string[] s_overrides = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

    // void cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
    private static delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> s_sgemm;
    // void openblas_set_num_threads(int)
    private static delegate* unmanaged<int, void> s_setNumThreads;

    /// <summary>The core OpenBLAS chose (openblas_get_corename, e.g. "SkylakeX"); null before a load or when not exported.</summary>
    public static string? CoreName { get; private set; }

    /// <summary>OpenBLAS's build description (openblas_get_config); null before a load or when not exported.</summary>
    public static string? Config { get; private set; }

    /// <summary>The overrides <see cref="TryLoad"/> removed from the native environment, with the values they had.</summary>
    public static IReadOnlyDictionary<string, string> ClearedOverrides => s_cleared;

    private static readonly Dictionary<string, string> s_cleared = [];

    [LibraryImport("libc", EntryPoint = "unsetenv", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int UnsetEnv(string name);

    /// <summary>Loads libopenblas.so.0 once; false when it or one of its exports is missing.</summary>
    public static bool TryLoad()
    {
        if (s_sgemm != null) return true;
        ClearOverrides();
        if (!NativeLibrary.TryLoad("libopenblas.so.0", out nint library)) return false;
        if (!NativeLibrary.TryGetExport(library, "cblas_sgemm", out nint sgemm)
            || !NativeLibrary.TryGetExport(library, "openblas_set_num_threads", out nint setThreads))
        {
            NativeLibrary.Free(library);
            return false;
        }
        s_sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)sgemm;
        s_setNumThreads = (delegate* unmanaged<int, void>)setThreads;
        CoreName = ReadString(library, "openblas_get_corename");
        Config = ReadString(library, "openblas_get_config");
        return true;
    }

    /// <summary>
    /// Unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the native environment (where OpenBLAS's constructor reads
    /// them) before the library loads, and says so on stderr. .NET's own view of the environment, and so every child
    /// process it starts, keeps them.
    /// </summary>
    private static void ClearOverrides()
    {
        if (OperatingSystem.IsWindows()) return;
        foreach (var name in s_overrides)
        {
            // .NET copies the environment at start-up, so this is the value the native environment still holds.
            string? value = Environment.GetEnvironmentVariable(name);
            if (value == null) continue;
            string? failure;
            try
            {
                failure = UnsetEnv(name) == 0 ? null : $"errno {Marshal.GetLastPInvokeError()}";
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                failure = e.Message;
            }
            if (failure == null)
            {
                s_cleared[name] = value;
                Console.Error.WriteLine($"gemm: cleared {name}={value} for the OpenBLAS peer only (it detects its own core)");
            }
            else
                Console.Error.WriteLine($"gemm: could not clear {name}={value} for the OpenBLAS peer ({failure})");
        }
    }

    /// <summary>Calls an exported <c>char* f(void)</c>; null when the export is missing.</summary>
    private static string? ReadString(nint library, string export)
    {
        if (!NativeLibrary.TryGetExport(library, export, out nint function)) return null;
        var text = ((delegate* unmanaged<byte*>)function)();
        return text == null ? null : Marshal.PtrToStringUTF8((nint)text)?.Trim();
    }

    public static void SetNumThreads(int threads) => s_setNumThreads(threads);

    /// <summary>Row-major cblas_sgemm with the same argument meaning as <c>Sgemm.Multiply</c>.</summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
        => s_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
