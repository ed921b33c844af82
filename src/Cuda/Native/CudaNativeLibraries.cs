using System.Reflection;
using System.Runtime.InteropServices;

namespace PeftGen.Backends.Cuda.Native;

/// <summary>
/// Loads the libraries <see cref="CudaLibraryResolver"/> found and binds the P/Invokes to them: every
/// <c>LibraryImport</c> of the CUDA backend names a logical library (<see cref="DriverName"/>, ...) that only the
/// resolver registered here knows, so nothing is loaded by the default probing and a missing library surfaces as a
/// <see cref="CudaNotAvailableException"/> listing what was searched, not as a bare <see cref="DllNotFoundException"/>.
/// The order and the fallbacks are <see cref="CudaLibraryLoading"/>'s.
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
    private static Dictionary<string, IntPtr> s_handles = new(StringComparer.Ordinal); // replaced, never mutated, once published
    private static IReadOnlyList<CudaLoadedLibrary> s_loaded = [];
    private static CudaLibrarySearchResult? s_search;
    private static bool s_resolverSet;

    /// <summary>The search behind the loaded libraries (null before a load succeeded).</summary>
    public static CudaLibrarySearchResult? LoadedFrom => s_search;

    /// <summary>Every library loaded so far, in load order, with its file and how it was found.</summary>
    public static IReadOnlyList<CudaLoadedLibrary> Loaded => s_loaded;

    /// <summary>The logical name the P/Invokes use for <paramref name="kind"/>.</summary>
    public static string LogicalName(CudaLibraryKind kind) => kind switch
    {
        CudaLibraryKind.Driver => DriverName,
        CudaLibraryKind.Cublas => CublasName,
        CudaLibraryKind.CublasLt => CublasLtName,
        CudaLibraryKind.Nvrtc => NvrtcName,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>Finds and loads every library once per process (later calls return at once).</summary>
    /// <exception cref="CudaNotAvailableException">A library is missing or cannot be loaded; the message lists the search.</exception>
    public static void EnsureLoaded() => EnsureLoaded(CudaLibraryLoading.Order);

    /// <summary>
    /// Finds and loads NVRTC alone (and its builtins), which compiles kernels without a driver or a GPU: the GPU check
    /// compiles every kernel this way when no device is present.
    /// </summary>
    /// <exception cref="CudaNotAvailableException">NVRTC is missing or cannot be loaded.</exception>
    public static void EnsureNvrtcLoaded() => EnsureLoaded([CudaLibraryKind.Nvrtc]);

    private static void EnsureLoaded(IReadOnlyList<CudaLibraryKind> kinds)
    {
        lock (s_lock)
        {
            var pending = kinds.Where(k => !s_handles.ContainsKey(LogicalName(k))).ToList();
            if (pending.Count == 0) return;
            var search = CudaLibraryResolver.Search(CudaSearchEnvironment.Current);
            var (handles, loaded) = CudaLibraryLoading.Load(search, pending, SystemNativeLibraryLoader.Instance);
            if (!s_resolverSet)
            {
                NativeLibrary.SetDllImportResolver(typeof(CudaNativeLibraries).Assembly, Resolve);
                s_resolverSet = true;
            }
            var merged = new Dictionary<string, IntPtr>(s_handles, StringComparer.Ordinal);
            foreach (var (kind, handle) in handles) merged[LogicalName(kind)] = handle;
            s_loaded = [.. s_loaded, .. loaded];
            s_search = search;
            Volatile.Write(ref s_handles, merged);
        }
    }

    // Called by the runtime for every P/Invoke of this assembly whose library is not loaded yet; zero lets default probing go on.
    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        var handles = Volatile.Read(ref s_handles);
        if (handles.TryGetValue(libraryName, out var handle)) return handle;
        if (libraryName.StartsWith("peftgen-cuda-", StringComparison.Ordinal))
            throw new CudaNotAvailableException($"The CUDA library '{libraryName}' was used before the CUDA backend loaded it; call CudaNativeLibraries.EnsureLoaded first.");
        return IntPtr.Zero;
    }
}

/// <summary>One library the backend loaded.</summary>
/// <param name="Name">What it is ("libcuda.so.1 (the NVIDIA driver)", "libnvrtc-builtins.so.* (NVRTC's builtins)").</param>
/// <param name="Path">The file (as mapped into the process when the dynamic loader found it by name).</param>
/// <param name="How">How it was found: the search's folder and reason, an override, or the dynamic loader and the name asked for.</param>
internal sealed record CudaLoadedLibrary(string Name, string Path, string How);

/// <summary>Loads native libraries; the real one is <see cref="SystemNativeLibraryLoader"/>, tests record the calls.</summary>
internal interface INativeLibraryLoader
{
    /// <summary>Loads the file at <paramref name="path"/>.</summary>
    /// <exception cref="DllNotFoundException">It cannot be loaded (missing, or a dependency is).</exception>
    /// <exception cref="BadImageFormatException">It is not a library for this process.</exception>
    IntPtr Load(string path);

    /// <summary>Asks the dynamic loader for <paramref name="name"/> (a file name: its own search, cache and run paths).</summary>
    bool TryLoadByName(string name, out IntPtr handle);

    /// <summary>The file of a loaded library whose name is <paramref name="stem"/> or <paramref name="stem"/>.N…, or null.</summary>
    string? MappedPath(string stem);

    /// <summary>Unloads a library loaded here.</summary>
    void Free(IntPtr handle);
}

/// <summary><see cref="NativeLibrary"/>, and <c>/proc/self/maps</c> for where a library found by name came from.</summary>
internal sealed class SystemNativeLibraryLoader : INativeLibraryLoader
{
    public static SystemNativeLibraryLoader Instance { get; } = new();

    public IntPtr Load(string path) => NativeLibrary.Load(path);

    public bool TryLoadByName(string name, out IntPtr handle) => NativeLibrary.TryLoad(name, out handle);

    public string? MappedPath(string stem)
    {
        try
        {
            return CudaLibraryLoading.FindMapped(File.ReadAllText("/proc/self/maps"), stem);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    public void Free(IntPtr handle) => NativeLibrary.Free(handle);
}

/// <summary>
/// The order and fallbacks of loading the CUDA libraries, apart from the process so tests can check them:
/// <list type="number">
/// <item>the driver, then cuBLASLt before cuBLAS (cuBLAS needs cuBLASLt, and a wheel's cuBLAS may lack the run path that
/// finds it: once cuBLASLt is loaded by full path, the loader resolves cuBLAS's dependency by its soname), then NVRTC's
/// builtins by full path from NVRTC's own folder (some NVRTC wheels lack an <c>$ORIGIN</c> run path, so the first compile
/// would not find them), then NVRTC;</item>
/// <item>a library that no folder of the search holds is asked of the dynamic loader by its usual names
/// (<c>libcuda.so.1</c>, <c>libcublas.so.13</c>, ...): its own search covers <c>LD_LIBRARY_PATH</c> set after start-up
/// aside, its cache (<c>ldconfig</c>) and default folders; where it found the file is read back for the report.</item>
/// </list>
/// </summary>
internal static class CudaLibraryLoading
{
    /// <summary>The load order.</summary>
    public static readonly CudaLibraryKind[] Order = [CudaLibraryKind.Driver, CudaLibraryKind.CublasLt, CudaLibraryKind.Cublas, CudaLibraryKind.Nvrtc];

    /// <summary>What NVRTC's builtins are called in reports.</summary>
    public const string BuiltinsName = "libnvrtc-builtins.so.* (NVRTC's builtins)";

    /// <summary>The names the dynamic loader is asked for when no folder of the search holds <paramref name="kind"/>, most likely first.</summary>
    public static IReadOnlyList<string> LoaderNames(CudaLibraryKind kind) => kind switch
    {
        CudaLibraryKind.Driver => ["libcuda.so.1"],
        CudaLibraryKind.Cublas => ["libcublas.so.13", "libcublas.so.12", "libcublas.so"],
        CudaLibraryKind.CublasLt => ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
        CudaLibraryKind.Nvrtc => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>
    /// Loads <paramref name="kinds"/> (in <see cref="Order"/>) from <paramref name="search"/>'s files, falling back to the
    /// dynamic loader by name for those it did not find. All or nothing: on failure every library loaded here is freed.
    /// </summary>
    /// <exception cref="CudaNotAvailableException">A library is found nowhere, or cannot be loaded; the message lists the search.</exception>
    public static (Dictionary<CudaLibraryKind, IntPtr> Handles, List<CudaLoadedLibrary> Loaded) Load(
        CudaLibrarySearchResult search, IEnumerable<CudaLibraryKind> kinds, INativeLibraryLoader loader)
    {
        ArgumentNullException.ThrowIfNull(search);
        ArgumentNullException.ThrowIfNull(loader);
        var wanted = kinds.ToHashSet();
        var handles = new Dictionary<CudaLibraryKind, IntPtr>();
        var extra = new List<IntPtr>();
        var loaded = new List<CudaLoadedLibrary>();
        var missing = new List<CudaLibraryKind>();
        var askedInVain = new List<string>();
        try
        {
            foreach (var kind in Order.Where(wanted.Contains))
            {
                string description = CudaLibraryResolver.Describe(kind);
                if (search.PathOf(kind) is { } path)
                {
                    if (kind == CudaLibraryKind.Nvrtc) LoadBuiltins(path, search, loader, extra, loaded);
                    handles[kind] = LoadFile(loader, path, search);
                    loaded.Add(new CudaLoadedLibrary(description, path, search.HowFound(kind)));
                    continue;
                }
                bool found = false;
                foreach (var name in LoaderNames(kind))
                {
                    if (!loader.TryLoadByName(name, out var handle)) continue;
                    string mapped = loader.MappedPath(CudaLibraryResolver.Stem(kind)) ?? name;
                    handles[kind] = handle;
                    loaded.Add(new CudaLoadedLibrary(description, mapped, $"the dynamic loader, asked for {name}"));
                    search.MarkFound(kind, mapped, $"the dynamic loader, asked for {name}");
                    // NVRTC is loaded, but nothing is compiled yet: its builtins can still be loaded ahead of the first compile.
                    if (kind == CudaLibraryKind.Nvrtc && Path.IsPathRooted(mapped)) LoadBuiltins(mapped, search, loader, extra, loaded);
                    found = true;
                    break;
                }
                if (!found)
                {
                    missing.Add(kind);
                    askedInVain.AddRange(LoaderNames(kind));
                }
            }
            if (missing.Count > 0)
            {
                search.LoaderNames = askedInVain;
                throw search.ToException();
            }
            return (handles, loaded);
        }
        catch
        {
            foreach (var handle in handles.Values.Concat(extra)) loader.Free(handle);
            throw;
        }
    }

    /// <summary>The file in <paramref name="maps"/> (the text of <c>/proc/self/maps</c>) named <paramref name="stem"/> or <paramref name="stem"/>.N…, or null.</summary>
    public static string? FindMapped(string maps, string stem)
    {
        ArgumentNullException.ThrowIfNull(maps);
        foreach (var line in maps.Split('\n'))
        {
            int slash = line.IndexOf('/');
            if (slash < 0) continue;
            string file = line[slash..].Trim();
            if (file.EndsWith(" (deleted)", StringComparison.Ordinal)) continue;
            if (CudaLibraryResolver.ParseVersion(Path.GetFileName(file), stem) != null) return file;
        }
        return null;
    }

    private static IntPtr LoadFile(INativeLibraryLoader loader, string path, CudaLibrarySearchResult search)
    {
        try
        {
            return loader.Load(path);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            throw new CudaNotAvailableException(
                search.ToException($"Loading {path} failed: {e.Message} (a library for another architecture, a missing dependency or a broken install?).").Message, e)
            { SearchedPaths = search.Searched };
        }
    }

    // Loads libnvrtc-builtins by full path from NVRTC's folder when it is there; a failure is left to NVRTC's first compile,
    // whose log then says what is wrong.
    private static void LoadBuiltins(string nvrtcPath, CudaLibrarySearchResult search, INativeLibraryLoader loader, List<IntPtr> extra, List<CudaLoadedLibrary> loaded)
    {
        if (CudaLibraryResolver.FindNvrtcBuiltins(nvrtcPath) is not { } builtins) return;
        try
        {
            extra.Add(loader.Load(builtins));
            loaded.Add(new CudaLoadedLibrary(BuiltinsName, builtins, "beside NVRTC, loaded by full path before NVRTC's first compile"));
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            loaded.Add(new CudaLoadedLibrary(BuiltinsName, builtins, $"NOT loaded: {e.Message}"));
        }
    }
}
