using PeftGen.Backends.Cuda;
using PeftGen.Backends.Cuda.Native;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>The load order and the dynamic loader's fallback, with a loader that records the calls (nothing is loaded).</summary>
public sealed class CudaLibraryLoadingTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "peftgen-cuda-loading-" + Guid.NewGuid().ToString("N"));

    public CudaLibraryLoadingTests() => Directory.CreateDirectory(_root);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string Touch(string relative)
    {
        string path = Path.Combine(_root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, []);
        return path;
    }

    private CudaLibrarySearchResult Search(Dictionary<string, string>? variables = null) => CudaLibraryResolver.Search(
        new CudaSearchEnvironment(name => variables != null && variables.TryGetValue(name, out var v) ? v : null, Path.Combine(_root, "home"), _root));

    private sealed class RecordingLoader(Dictionary<string, string>? byName = null, string? failing = null) : INativeLibraryLoader
    {
        private readonly Dictionary<IntPtr, string> _handles = [];
        public List<string> Calls { get; } = [];
        public List<string> Freed { get; } = [];

        public IntPtr Load(string path)
        {
            Calls.Add("load " + Path.GetFileName(path));
            if (path == failing) throw new DllNotFoundException($"{path}: cannot open shared object file");
            var handle = (IntPtr)(_handles.Count + 1);
            _handles[handle] = path;
            return handle;
        }

        public bool TryLoadByName(string name, out IntPtr handle)
        {
            Calls.Add("name " + name);
            handle = IntPtr.Zero;
            if (byName == null || !byName.TryGetValue(name, out var path)) return false;
            handle = (IntPtr)(_handles.Count + 1);
            _handles[handle] = path;
            return true;
        }

        public string? MappedPath(string stem) => _handles.Values.LastOrDefault(p => CudaLibraryResolver.ParseVersion(Path.GetFileName(p), stem) != null);

        public void Free(IntPtr handle) => Freed.Add(Path.GetFileName(_handles[handle]));
    }

    [Fact]
    public void Driver_then_cublaslt_before_cublas_then_nvrtc_builtins_by_full_path_before_nvrtc()
    {
        string lib = "venv/lib/python3.12/site-packages/nvidia/cu13/lib";
        Touch($"{lib}/libcublas.so.13");
        Touch($"{lib}/libcublasLt.so.13");
        Touch($"{lib}/libnvrtc.so.13");
        string builtins = Touch($"{lib}/libnvrtc-builtins.so.13.0");
        Touch("usr/lib/x86_64-linux-gnu/libcuda.so.1");
        var loader = new RecordingLoader();
        var (handles, loaded) = CudaLibraryLoading.Load(Search(new() { ["VIRTUAL_ENV"] = Path.Combine(_root, "venv") }), CudaLibraryLoading.Order, loader);
        Assert.Equal(["load libcuda.so.1", "load libcublasLt.so.13", "load libcublas.so.13", "load libnvrtc-builtins.so.13.0", "load libnvrtc.so.13"], loader.Calls);
        Assert.Equal(4, handles.Count);
        Assert.Equal(builtins, loaded.Single(l => l.Name == CudaLibraryLoading.BuiltinsName).Path);
        Assert.Equal("Python packages, VIRTUAL_ENV", loaded.Single(l => l.Name.StartsWith("libcublas.so", StringComparison.Ordinal)).How);
    }

    [Fact]
    public void Nvrtc_alone_loads_without_a_driver_for_compiling_kernels()
    {
        Touch("toolkit/libnvrtc.so.12");
        Touch("toolkit/libnvrtc-builtins.so.12.8");
        var loader = new RecordingLoader();
        CudaLibraryLoading.Load(Search(new() { ["PEFTGEN_CUDA_LIB_DIRS"] = Path.Combine(_root, "toolkit") }), [CudaLibraryKind.Nvrtc], loader);
        Assert.Equal(["load libnvrtc-builtins.so.12.8", "load libnvrtc.so.12"], loader.Calls);
    }

    [Fact]
    public void A_library_no_folder_holds_is_asked_of_the_dynamic_loader_and_reported_where_it_was_mapped()
    {
        Touch("usr/local/cuda/lib64/libcublas.so.13");
        Touch("usr/local/cuda/lib64/libcublasLt.so.13");
        Touch("usr/local/cuda/lib64/libnvrtc.so.13");
        var loader = new RecordingLoader(new() { ["libcuda.so.1"] = "/usr/lib64/nvidia-580/libcuda.so.580.159.04" });
        var (handles, loaded) = CudaLibraryLoading.Load(Search(), CudaLibraryLoading.Order, loader);
        Assert.Equal("name libcuda.so.1", loader.Calls[0]);
        var driver = loaded[0];
        Assert.Equal("/usr/lib64/nvidia-580/libcuda.so.580.159.04", driver.Path);
        Assert.Equal("the dynamic loader, asked for libcuda.so.1", driver.How);
        Assert.Equal(4, handles.Count);
    }

    [Fact]
    public void When_the_loader_finds_nothing_either_the_error_names_what_it_was_asked_and_frees_what_was_loaded()
    {
        Touch("usr/local/cuda/lib64/libcublas.so.13");
        Touch("usr/local/cuda/lib64/libcublasLt.so.13");
        var loader = new RecordingLoader(new() { ["libcuda.so.1"] = "/usr/lib/libcuda.so.1" });
        var e = Assert.Throws<CudaNotAvailableException>(() => CudaLibraryLoading.Load(Search(), CudaLibraryLoading.Order, loader));
        Assert.Contains("could not find libnvrtc.so.* (NVRTC)", e.Message);
        Assert.Contains("The dynamic loader's own search (LD_LIBRARY_PATH, its cache, run paths) found none of: libnvrtc.so.13, libnvrtc.so.12, libnvrtc.so.", e.Message);
        Assert.Contains("pip install nvidia-cublas nvidia-cuda-nvrtc", e.Message);
        Assert.Equal(["libcuda.so.1", "libcublasLt.so.13", "libcublas.so.13"], loader.Freed);
    }

    [Fact]
    public void A_file_that_fails_to_load_fails_the_whole_load_with_the_reason()
    {
        Touch("usr/lib/x86_64-linux-gnu/libcuda.so.1");
        Touch("usr/local/cuda/lib64/libcublasLt.so.13");
        string cublas = Touch("usr/local/cuda/lib64/libcublas.so.13");
        Touch("usr/local/cuda/lib64/libnvrtc.so.13");
        var loader = new RecordingLoader(failing: cublas);
        var e = Assert.Throws<CudaNotAvailableException>(() => CudaLibraryLoading.Load(Search(), CudaLibraryLoading.Order, loader));
        Assert.Contains($"Loading {cublas} failed", e.Message);
        Assert.Equal(["libcuda.so.1", "libcublasLt.so.13"], loader.Freed);
    }

    [Fact]
    public void Mapped_files_are_read_from_proc_self_maps_by_stem()
    {
        const string Maps = """
            7f0000000000-7f0000001000 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libcublasLt.so.13.0.2
            7f0000002000-7f0000003000 r--p 00000000 08:01 124 /usr/lib/x86_64-linux-gnu/libcublas.so.13.0.2
            7f0000004000-7f0000005000 r--p 00000000 08:01 125 /old/libcuda.so.570.1 (deleted)
            7f0000006000-7f0000007000 r--p 00000000 08:01 126 /usr/local/nvidia/lib64/libcuda.so.580.159.04
            7f0000008000-7f0000009000 rw-p 00000000 00:00 0 [heap]
            """;
        Assert.Equal("/usr/lib/x86_64-linux-gnu/libcublas.so.13.0.2", CudaLibraryLoading.FindMapped(Maps, "libcublas.so"));
        Assert.Equal("/usr/local/nvidia/lib64/libcuda.so.580.159.04", CudaLibraryLoading.FindMapped(Maps, "libcuda.so"));
        Assert.Null(CudaLibraryLoading.FindMapped(Maps, "libnvrtc.so"));
    }
}
