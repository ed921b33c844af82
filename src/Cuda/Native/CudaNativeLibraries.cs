using System.Reflection;
using System.Runtime.InteropServices;

namespace PeftGen.Backends.Cuda.Native;

/// <summary>
/// Loads the libraries <see cref="CudaLibraryResolver"/> found and binds the P/Invokes to them: every
/// <c>LibraryImport</c> of the CUDA backend names a logical library (<see cref="DriverName"/>, ...) that only the
/// resolver registered here knows, so nothing is loaded by the default probing and a missing library surfaces as a
/// <see cref="CudaNotAvailableException"/> listing what was searched, not as a bare <see cref="DllNotFoundException"/>.
/// </summary>
internal static class CudaNativeLibraries
{
    /// <summary>Logical library name of the driver API.</summary>
    public const string DriverName = "peftgen-cuda-driver";

    /// <summary>Logical library name of cuBLAS.</summary>
    public const string CublasName = "peftgen-cuda-cublas";

    /// <summary>Logical library name of cuBLASLt.</summary>
    public const string CublasLtName = "peftgen-cuda-cublaslt";

    /// <summary>Logical library name of NVRTC.</summary>
    public const string NvrtcName = "peftgen-cuda-nvrtc";

    private static readonly Lock s_lock = new();
    private static Dictionary<string, IntPtr>? s_handles;
    private static CudaLibrarySearchResult? s_search;
    private static bool s_resolverSet;

    /// <summary>The search behind the loaded libraries (null before <see cref="EnsureLoaded"/> succeeded).</summary>
    public static CudaLibrarySearchResult? LoadedFrom => s_search;

    /// <summary>The logical name the P/Invokes use for <paramref name="kind"/>.</summary>
    public static string LogicalName(CudaLibraryKind kind) => kind switch
    {
        CudaLibraryKind.Driver => DriverName,
        CudaLibraryKind.Cublas => CublasName,
        CudaLibraryKind.CublasLt => CublasLtName,
        CudaLibraryKind.Nvrtc => NvrtcName,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>
    /// Finds and loads every library once per process (later calls return at once).
    /// </summary>
    /// <exception cref="CudaNotAvailableException">A library is missing or cannot be loaded; the message lists the search.</exception>
    public static void EnsureLoaded()
    {
        lock (s_lock)
        {
            if (s_handles != null) return;
            var search = CudaLibraryResolver.Search(CudaSearchEnvironment.Current);
            if (!search.IsComplete) throw search.ToException();
            var handles = new Dictionary<string, IntPtr>(StringComparer.Ordinal);
            foreach (var kind in Enum.GetValues<CudaLibraryKind>())
            {
                string path = search.PathOf(kind)!;
                try
                {
                    handles[LogicalName(kind)] = NativeLibrary.Load(path);
                }
                catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
                {
                    foreach (var handle in handles.Values) NativeLibrary.Free(handle);
                    throw new CudaNotAvailableException(
                        search.ToException($"Loading {path} failed: {e.Message} (a library for another architecture or a broken install?).").Message, e)
                    { SearchedPaths = search.Searched };
                }
            }
            if (!s_resolverSet)
            {
                NativeLibrary.SetDllImportResolver(typeof(CudaNativeLibraries).Assembly, Resolve);
                s_resolverSet = true;
            }
            s_search = search;
            s_handles = handles;
        }
    }

    // Called by the runtime for every P/Invoke of this assembly whose library is not loaded yet; zero lets default probing go on.
    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        var handles = s_handles;
        if (handles != null && handles.TryGetValue(libraryName, out var handle)) return handle;
        if (libraryName.StartsWith("peftgen-cuda-", StringComparison.Ordinal))
            throw new CudaNotAvailableException($"The CUDA library '{libraryName}' was used before the CUDA backend loaded it; call CudaNativeLibraries.EnsureLoaded first.");
        return IntPtr.Zero;
    }
}
