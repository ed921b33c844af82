using System.Diagnostics;
using System.Globalization;
using System.Text;
using PeftGen.Backends.Cuda.Native;

namespace PeftGen.Backends.Cuda;

/// <summary>
/// What the GPU check (scripts/gpu-bundle.sh, its run.sh) asks first on a machine: which CUDA libraries are found, loaded
/// and from where, the driver and the devices (<see cref="Probe"/>); and whether every kernel compiles with this
/// machine's NVRTC, with each failure's log (<see cref="CompileKernels"/>), which needs NVRTC alone, no driver and no GPU.
/// </summary>
internal static unsafe class CudaDiagnostics
{
    /// <summary>Environment variable listing the architectures <see cref="CompileKernels"/> targets when no device is present (default sm_80,sm_90).</summary>
    public const string ArchitecturesVariable = "PEFTGEN_CUDA_ARCHS";

    /// <summary>Prints the search, the libraries loaded and how they were found, the driver and every device; true when device 0 works.</summary>
    public static bool Probe(TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        var env = CudaSearchEnvironment.Current;
        w.WriteLine("python3 on PATH, prefixes: " + Show(CudaLibraryResolver.PythonOnPathPrefixes(env)));
        foreach (var name in (string[])["VIRTUAL_ENV", "CONDA_PREFIX", "CUDA_PATH", "LD_LIBRARY_PATH", CudaLibraryResolver.LibraryDirsVariable])
            w.WriteLine($"{name}={env.GetVariable(name) ?? "(unset)"}");
        var search = CudaLibraryResolver.Search(env);
        foreach (var kind in CudaLibraryLoading.Order)
            w.WriteLine(search.PathOf(kind) is { } path
                ? $"found  {CudaLibraryResolver.Describe(kind)}: {path} ({search.HowFound(kind)})"
                : $"absent {CudaLibraryResolver.Describe(kind)} from every folder searched");
        if (search.PathOf(CudaLibraryKind.Nvrtc) is { } nvrtc)
            w.WriteLine($"NVRTC builtins beside it: {CudaLibraryResolver.FindNvrtcBuiltins(nvrtc) ?? "none (NVRTC must find them through its run path)"}");
        int count;
        try
        {
            count = CudaDevices.Count;
        }
        catch (Exception e) when (e is CudaNotAvailableException or CudaException)
        {
            PrintLoaded(w);
            w.WriteLine("no CUDA device: " + e.Message);
            return false;
        }
        PrintLoaded(w);
        int driver;
        CudaErrors.Check(CudaDriver.DriverGetVersion(&driver), "cuDriverGetVersion");
        w.WriteLine($"driver API version: {driver / 1000}.{driver % 1000 / 10}");
        w.WriteLine($"NVRTC version: {NvrtcCompiler.Version()}");
        for (int i = 0; i < count; i++)
        {
            var info = CudaDevices.Info(i);
            w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"cuda:{i}: {info.Name}, compute capability {info.Major}.{info.Minor} ({NvrtcCompiler.Architecture(info.Major, info.Minor)}), {info.Multiprocessors} SMs, {info.TotalMemory / (1024.0 * 1024 * 1024):F1} GiB, opt-in shared memory {info.MaxSharedMemoryPerBlockOptin / 1024} KiB, concurrent managed access {info.ConcurrentManagedAccess}"));
        }
        var context = CudaContext.Get(0);
        int cublas;
        CudaErrors.CheckCublas(Native.Cublas.GetVersion(context.Cublas, &cublas), "cublasGetVersion");
        var (free, total) = context.MemoryInfo();
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"cuBLAS version: {cublas} (handle created on cuda:0); free memory {free / (1024.0 * 1024 * 1024):F1} of {total / (1024.0 * 1024 * 1024):F1} GiB"));
        w.WriteLine($"kernel cache: {context.KernelCache.Directory}");
        return true;
    }

    /// <summary>
    /// Compiles every kernel module with NVRTC, for device 0's architecture when a device works, else for
    /// <see cref="ArchitecturesVariable"/> (sm_80 and sm_90 by default); prints each result and each failure's log.
    /// With a device, every kernel the host launches is also loaded and looked up. Returns the number of failures
    /// (-1 when NVRTC itself is missing).
    /// </summary>
    public static int CompileKernels(TextWriter w, bool withDevice)
    {
        ArgumentNullException.ThrowIfNull(w);
        try
        {
            CudaNativeLibraries.EnsureNvrtcLoaded();
        }
        catch (CudaNotAvailableException e)
        {
            w.WriteLine("NVRTC not available: " + e.Message);
            return -1;
        }
        foreach (var library in CudaNativeLibraries.Loaded.Where(l => l.Name.Contains("NVRTC", StringComparison.Ordinal)))
            w.WriteLine($"loaded {library.Name}: {library.Path} ({library.How})");
        w.WriteLine($"NVRTC version: {NvrtcCompiler.Version()}");
        string[] architectures = withDevice
            ? [NvrtcCompiler.Architecture(CudaDevices.Info(0).Major, CudaDevices.Info(0).Minor)]
            : (Environment.GetEnvironmentVariable(ArchitecturesVariable) ?? "sm_80,sm_90").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        int failures = 0;
        foreach (var arch in architectures)
        {
            var options = NvrtcCompiler.Options(arch);
            foreach (var module in Enum.GetValues<CudaModule>())
            {
                string file = CudaKernelSources.FileName(module);
                var clock = Stopwatch.StartNew();
                try
                {
                    var image = NvrtcCompiler.Compile(CudaKernelSources.Source(module), Path.GetFileNameWithoutExtension(file), options);
                    var missing = CudaKernelSources.KernelNames(module).Where(n => !Contains(image, n)).ToList();
                    if (withDevice)
                        foreach (var name in CudaKernelSources.KernelNames(module)) CudaContext.Get(0).Function(module, name);
                    if (missing.Count > 0)
                    {
                        failures++;
                        w.WriteLine($"FAIL {file} {arch}: compiled, but the image lacks {string.Join(", ", missing)}");
                    }
                    else
                    {
                        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                            $"ok   {file} {arch}: {image.Length:N0} bytes of CUBIN, {CudaKernelSources.KernelNames(module).Count} kernels{(withDevice ? " loaded" : "")}, {clock.Elapsed.TotalSeconds:F1} s"));
                    }
                }
                catch (Exception e) when (e is CudaException or CudaNotAvailableException)
                {
                    failures++;
                    w.WriteLine($"FAIL {file} {arch}: {e.Message}");
                }
            }
        }
        w.WriteLine(failures == 0 ? "every kernel compiled" : $"{failures} module(s) failed");
        return failures;
    }

    private static void PrintLoaded(TextWriter w)
    {
        foreach (var library in CudaNativeLibraries.Loaded) w.WriteLine($"loaded {library.Name}: {library.Path} ({library.How})");
    }

    private static string Show(IReadOnlyList<string> items) => items.Count == 0 ? "(none)" : string.Join(", ", items);

    private static bool Contains(byte[] image, string name)
    {
        var needle = Encoding.ASCII.GetBytes(name + "\0");
        return image.AsSpan().IndexOf(needle) >= 0;
    }
}
