using PeftGen.Backends.Cuda;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>The library search over fake directory trees (empty files named like the libraries; nothing is loaded).</summary>
public sealed class CudaLibraryResolverTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "peftgen-cuda-resolver-" + Guid.NewGuid().ToString("N"));

    public CudaLibraryResolverTests() => Directory.CreateDirectory(_root);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string Touch(string relative)
    {
        string path = Path.Combine(_root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, []);
        return path;
    }

    private CudaSearchEnvironment Env(Dictionary<string, string>? variables = null) =>
        new(name => variables != null && variables.TryGetValue(name, out var v) ? v : null, Path.Combine(_root, "home"), _root);

    [Fact]
    public void Empty_machine_reports_every_library_missing_and_every_folder_searched()
    {
        var result = CudaLibraryResolver.Search(Env(new() { ["CUDA_PATH"] = Path.Combine(_root, "opt/cuda"), ["LD_LIBRARY_PATH"] = "/nonexistent/a:/nonexistent/b" }));
        Assert.False(result.IsComplete);
        Assert.Equal(4, result.Missing.Count());
        var message = result.ToException().Message;
        Assert.Contains("libcuda.so.1", message);
        Assert.Contains("libnvrtc.so.*", message);
        Assert.Contains(Path.Combine(_root, "opt/cuda", "lib64") + " (CUDA_PATH)", message);
        Assert.Contains("/nonexistent/a (LD_LIBRARY_PATH)", message);
        Assert.Contains(Path.Combine(_root, "usr/local/cuda/lib64"), message);
        Assert.Contains(Path.Combine(_root, "usr/lib/x86_64-linux-gnu"), message);
        Assert.Contains("PEFTGEN_CUDA_LIB_DIRS", message);
        Assert.Contains("pip install nvidia-cublas-cu12", message);
        Assert.Equal(result.Searched, result.ToException().SearchedPaths);
    }

    [Fact]
    public void Search_order_is_overrides_cuda_path_ld_library_path_toolkits_system_python()
    {
        Directory.CreateDirectory(Path.Combine(_root, "usr/local/cuda-11.8"));
        Directory.CreateDirectory(Path.Combine(_root, "usr/local/cuda-12.4"));
        Directory.CreateDirectory(Path.Combine(_root, "usr/local/cuda-12.10"));
        Directory.CreateDirectory(Path.Combine(_root, "venv/lib/python3.11/site-packages/nvidia/cublas/lib"));
        Directory.CreateDirectory(Path.Combine(_root, "home/.local/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib"));
        Directory.CreateDirectory(Path.Combine(_root, "usr/lib/python3/dist-packages/nvidia/cublas/lib"));
        var dirs = CudaLibraryResolver.SearchDirectories(Env(new()
        {
            ["PEFTGEN_CUDA_LIB_DIRS"] = "/x1:/x2",
            ["CUDA_PATH"] = "/cp",
            ["LD_LIBRARY_PATH"] = "/ld1::/ld2",
            ["VIRTUAL_ENV"] = Path.Combine(_root, "venv"),
        })).Select(d => d.Directory).ToList();
        int Index(string dir) => dirs.IndexOf(dir);
        Assert.Equal(["/x1", "/x2", "/cp/lib64", "/cp/targets/x86_64-linux/lib", "/cp/lib", "/ld1", "/ld2"], dirs.Take(7));
        Assert.True(Index(Path.Combine(_root, "usr/local/cuda/lib64")) > Index("/ld2"));
        // Versioned toolkits newest first, numerically (12.10 > 12.4 > 11.8).
        Assert.True(Index(Path.Combine(_root, "usr/local/cuda-12.10/lib64")) < Index(Path.Combine(_root, "usr/local/cuda-12.4/lib64")));
        Assert.True(Index(Path.Combine(_root, "usr/local/cuda-12.4/lib64")) < Index(Path.Combine(_root, "usr/local/cuda-11.8/lib64")));
        int system = Index(Path.Combine(_root, "usr/lib/x86_64-linux-gnu"));
        int venv = Index(Path.Combine(_root, "venv/lib/python3.11/site-packages/nvidia/cublas/lib"));
        int local = Index(Path.Combine(_root, "home/.local/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib"));
        int debian = Index(Path.Combine(_root, "usr/lib/python3/dist-packages/nvidia/cublas/lib"));
        Assert.True(system > Index(Path.Combine(_root, "usr/local/cuda-11.8/lib64")));
        Assert.True(venv > system && local > venv && debian > local, string.Join("\n", dirs));
    }

    [Fact]
    public void Finds_each_library_in_the_first_folder_holding_it_and_takes_the_highest_version_there()
    {
        Touch("usr/lib/x86_64-linux-gnu/libcuda.so.1");
        Touch("usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15");
        Touch("usr/local/cuda/lib64/libcublas.so");
        Touch("usr/local/cuda/lib64/libcublas.so.12");
        Touch("usr/local/cuda/lib64/libcublas.so.12.4.5.8");
        Touch("usr/local/cuda/lib64/libcublas.so.12.10.1");
        Touch("usr/local/cuda/lib64/libcublasLt.so.12");
        Touch("usr/local/cuda/lib64/libnvrtc-builtins.so.12.4");
        Touch("home/.local/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
        Touch("home/.local/lib/python3.12/site-packages/nvidia/cublas/lib/libcublas.so.13"); // later in the order: not taken
        var result = CudaLibraryResolver.Search(Env());
        Assert.True(result.IsComplete, result.ToException().Message);
        Assert.Equal(Path.Combine(_root, "usr/lib/x86_64-linux-gnu/libcuda.so.1"), result.PathOf(CudaLibraryKind.Driver));
        Assert.Equal(Path.Combine(_root, "usr/local/cuda/lib64/libcublas.so.12.10.1"), result.PathOf(CudaLibraryKind.Cublas));
        Assert.Equal(Path.Combine(_root, "usr/local/cuda/lib64/libcublasLt.so.12"), result.PathOf(CudaLibraryKind.CublasLt));
        Assert.Equal(Path.Combine(_root, "home/.local/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"), result.PathOf(CudaLibraryKind.Nvrtc));
    }

    [Fact]
    public void Environment_folders_win_over_system_folders()
    {
        Touch("usr/local/cuda/lib64/libnvrtc.so.12");
        string mine = Touch("mine/libnvrtc.so.11");
        Touch("ld/libnvrtc.so.13");
        var result = CudaLibraryResolver.Search(Env(new() { ["PEFTGEN_CUDA_LIB_DIRS"] = Path.Combine(_root, "mine"), ["LD_LIBRARY_PATH"] = Path.Combine(_root, "ld") }));
        Assert.Equal(mine, result.PathOf(CudaLibraryKind.Nvrtc));
        Assert.Contains(CudaLibraryKind.Driver, result.Missing);
    }

    [Fact]
    public void Conda_prefix_lib_and_its_site_packages_are_searched()
    {
        string cublasLt = Touch("conda/lib/libcublasLt.so.12");
        string nvrtc = Touch("conda/lib/python3.10/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
        var result = CudaLibraryResolver.Search(Env(new() { ["CONDA_PREFIX"] = Path.Combine(_root, "conda") }));
        Assert.Equal(cublasLt, result.PathOf(CudaLibraryKind.CublasLt));
        Assert.Equal(nvrtc, result.PathOf(CudaLibraryKind.Nvrtc));
    }

    [Fact]
    public void A_file_override_is_used_as_is_and_a_missing_one_is_reported_without_falling_back()
    {
        string driver = Touch("custom/my-libcuda.so");
        Touch("usr/local/cuda/lib64/libcublas.so.12");
        var result = CudaLibraryResolver.Search(Env(new()
        {
            ["PEFTGEN_LIBCUDA"] = driver,
            ["PEFTGEN_LIBCUBLAS"] = Path.Combine(_root, "nope/libcublas.so.12"),
        }));
        Assert.Equal(driver, result.PathOf(CudaLibraryKind.Driver));
        Assert.Null(result.PathOf(CudaLibraryKind.Cublas));
        var message = result.ToException().Message;
        Assert.Contains("PEFTGEN_LIBCUBLAS is set to", message);
        Assert.Contains("does not exist", message);
        Assert.Contains("Found libcuda.so.1: " + driver, message);
    }

    [Theory]
    [InlineData("libcublas.so", "libcublas.so", new int[0])]
    [InlineData("libcublas.so.12", "libcublas.so", new[] { 12 })]
    [InlineData("libcublas.so.12.4.5.8", "libcublas.so", new[] { 12, 4, 5, 8 })]
    [InlineData("libcublasLt.so.12", "libcublas.so", null)]
    [InlineData("libnvrtc-builtins.so.12", "libnvrtc.so", null)]
    [InlineData("libnvrtc.so.12.alpha", "libnvrtc.so", null)]
    [InlineData("libnvrtc.so.", "libnvrtc.so", null)]
    public void Version_parsing_accepts_only_the_stem_and_dotted_numbers(string file, string stem, int[]? expected)
    {
        Assert.Equal(expected, CudaLibraryResolver.ParseVersion(file, stem));
    }

    [Fact]
    public void Versions_compare_numerically_and_longer_beats_its_prefix()
    {
        Assert.True(CudaLibraryResolver.CompareVersions([12, 10], [12, 4]) > 0);
        Assert.True(CudaLibraryResolver.CompareVersions([12, 4, 1], [12, 4]) > 0);
        Assert.True(CudaLibraryResolver.CompareVersions([], [1]) < 0);
        Assert.Equal(0, CudaLibraryResolver.CompareVersions([12, 4], [12, 4]));
    }
    [Fact]
    public void Cuda_13_wheels_of_a_python_active_through_path_alone_are_found()
    {
        // A virtual environment put first on PATH (no VIRTUAL_ENV): its python3 links to the base interpreter elsewhere.
        Touch("usr/bin/python3.12");
        Directory.CreateDirectory(Path.Combine(_root, "opt/torch/.venv/bin"));
        File.CreateSymbolicLink(Path.Combine(_root, "opt/torch/.venv/bin/python3"), Path.Combine(_root, "usr/bin/python3.12"));
        string lib = "opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib";
        string cublas = Touch($"{lib}/libcublas.so.13");
        string cublasLt = Touch($"{lib}/libcublasLt.so.13");
        string nvrtc = Touch($"{lib}/libnvrtc.so.13");
        Touch($"{lib}/libnvrtc-builtins.so.13.0");
        string driver = Touch("usr/local/nvidia/lib64/libcuda.so.1");
        var env = Env(new() { ["PATH"] = $"/nonexistent:{Path.Combine(_root, "opt/torch/.venv/bin")}:{Path.Combine(_root, "usr/bin")}" });

        Assert.Equal([Path.Combine(_root, "opt/torch/.venv"), Path.Combine(_root, "usr")], CudaLibraryResolver.PythonOnPathPrefixes(env));
        var result = CudaLibraryResolver.Search(env);
        Assert.True(result.IsComplete, result.ToException().Message);
        Assert.Equal(cublas, result.PathOf(CudaLibraryKind.Cublas));
        Assert.Equal(cublasLt, result.PathOf(CudaLibraryKind.CublasLt));
        Assert.Equal(nvrtc, result.PathOf(CudaLibraryKind.Nvrtc));
        Assert.Equal(driver, result.PathOf(CudaLibraryKind.Driver));
        Assert.Equal("Python packages, python3 on PATH", result.HowFound(CudaLibraryKind.Nvrtc));
        Assert.Equal("container driver", result.HowFound(CudaLibraryKind.Driver));
    }

    [Fact]
    public void Container_driver_folders_come_before_the_system_libraries()
    {
        string container = Touch("usr/local/nvidia/lib64/libcuda.so.1");
        Touch("usr/lib/x86_64-linux-gnu/libcuda.so.1");
        var dirs = CudaLibraryResolver.SearchDirectories(Env()).Select(d => d.Directory).ToList();
        Assert.True(dirs.IndexOf(Path.Combine(_root, "usr/local/nvidia/lib64")) < dirs.IndexOf(Path.Combine(_root, "usr/lib/x86_64-linux-gnu")));
        Assert.Contains(Path.Combine(_root, "usr/local/nvidia/lib"), dirs);
        Assert.Equal(container, CudaLibraryResolver.Search(Env()).PathOf(CudaLibraryKind.Driver));
    }

    [Fact]
    public void Folders_of_the_loader_cache_configuration_are_searched_after_the_system_libraries()
    {
        File.WriteAllText(Touch("etc/ld.so.conf"), "# the loader's folders\ninclude /etc/ld.so.conf.d/*.conf\n/opt/extra/lib\n");
        File.WriteAllText(Touch("etc/ld.so.conf.d/10-cuda.conf"), "/opt/cuda-13/lib64  # the toolkit\n");
        File.WriteAllText(Touch("etc/ld.so.conf.d/00-nvidia.conf"), "/opt/nvidia/driver\n");
        string driver = Touch("opt/nvidia/driver/libcuda.so.1");
        string nvrtc = Touch("opt/cuda-13/lib64/libnvrtc.so.13");
        var env = Env();
        Assert.Equal([Path.Combine(_root, "opt/nvidia/driver"), Path.Combine(_root, "opt/cuda-13/lib64"), Path.Combine(_root, "opt/extra/lib")],
            CudaLibraryResolver.LdSoConfFolders(env));
        var dirs = CudaLibraryResolver.SearchDirectories(env);
        Assert.True(dirs.ToList().FindIndex(d => d.Source == "ld.so.conf") > dirs.ToList().FindIndex(d => d.Source == "system libraries"));
        var result = CudaLibraryResolver.Search(env);
        Assert.Equal(driver, result.PathOf(CudaLibraryKind.Driver));
        Assert.Equal(nvrtc, result.PathOf(CudaLibraryKind.Nvrtc));
        Assert.Equal("ld.so.conf", result.HowFound(CudaLibraryKind.Nvrtc));
    }

    [Fact]
    public void Nvrtc_builtins_are_taken_from_nvrtcs_own_folder_with_its_major_version()
    {
        string nvrtc = Touch("wheel/lib/libnvrtc.so.13");
        Touch("wheel/lib/libnvrtc-builtins.so.12.9");
        string builtins = Touch("wheel/lib/libnvrtc-builtins.so.13.0");
        Touch("wheel/lib/libnvrtc-builtins.alt.so.14");
        Assert.Equal(builtins, CudaLibraryResolver.FindNvrtcBuiltins(nvrtc));
        Assert.Null(CudaLibraryResolver.FindNvrtcBuiltins(Touch("bare/libnvrtc.so.12")));
        // A link to NVRTC elsewhere: the folder of the file it links to is searched too.
        string real = Touch("toolkit/lib64/libnvrtc.so.12.4.127");
        string builtins12 = Touch("toolkit/lib64/libnvrtc-builtins.so.12.4");
        Directory.CreateDirectory(Path.Combine(_root, "links"));
        string link = Path.Combine(_root, "links/libnvrtc.so.12");
        File.CreateSymbolicLink(link, real);
        Assert.Equal(builtins12, CudaLibraryResolver.FindNvrtcBuiltins(link));
    }
}
