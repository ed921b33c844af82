using PeftGen.Backends.Cuda;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>The on-disk kernel cache with a fake compiler.</summary>
public sealed class KernelCacheTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "peftgen-kernel-cache-" + Guid.NewGuid().ToString("N"));
    private int _compiles;

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private byte[] FakeCompile(string source, string name, IReadOnlyList<string> options)
    {
        _compiles++;
        return System.Text.Encoding.UTF8.GetBytes($"image of {name} for {string.Join(',', options)}: {source.Length}");
    }

    [Fact]
    public void Second_request_and_a_new_cache_over_the_same_folder_load_from_disk()
    {
        var cache = new KernelCache(_dir, FakeCompile, "12.4");
        var first = cache.GetOrCompile("rope", "source", "sm_90", ["--gpu-architecture=sm_90"]);
        var second = cache.GetOrCompile("rope", "source", "sm_90", ["--gpu-architecture=sm_90"]);
        Assert.Equal(first, second);
        Assert.Equal((1, 1, 1), (_compiles, cache.Misses, cache.Hits));
        var reopened = new KernelCache(_dir, FakeCompile, "12.4");
        Assert.Equal(first, reopened.GetOrCompile("rope", "source", "sm_90", ["--gpu-architecture=sm_90"]));
        Assert.Equal((1, 1), (_compiles, reopened.Hits));
        Assert.Single(Directory.GetFiles(_dir));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp-*"));
    }

    [Fact]
    public void Source_architecture_compiler_version_and_options_each_change_the_key()
    {
        string baseKey = KernelCache.Key("s", "sm_90", "12.4", ["-a"]);
        Assert.Matches("^[0-9a-f]{64}$", baseKey);
        Assert.Equal(baseKey, KernelCache.Key("s", "sm_90", "12.4", ["-a"]));
        Assert.NotEqual(baseKey, KernelCache.Key("s2", "sm_90", "12.4", ["-a"]));
        Assert.NotEqual(baseKey, KernelCache.Key("s", "sm_80", "12.4", ["-a"]));
        Assert.NotEqual(baseKey, KernelCache.Key("s", "sm_90", "12.6", ["-a"]));
        Assert.NotEqual(baseKey, KernelCache.Key("s", "sm_90", "12.4", ["-b"]));
        Assert.NotEqual(baseKey, KernelCache.Key("s", "sm_90", "12.4", ["-a", "-b"]));
        // Length prefixes: moving text between fields changes the key.
        Assert.NotEqual(KernelCache.Key("ab", "c", "v", []), KernelCache.Key("a", "bc", "v", []));
        Assert.NotEqual(KernelCache.Key("s", "a", "v", ["x", "y"]), KernelCache.Key("s", "a", "v", ["xy"]));

        var cache = new KernelCache(_dir, FakeCompile, "12.4");
        cache.GetOrCompile("m", "s", "sm_90", []);
        new KernelCache(_dir, FakeCompile, "12.6").GetOrCompile("m", "s", "sm_90", []);
        cache.GetOrCompile("m", "s", "sm_80", []);
        Assert.Equal(3, _compiles);
        Assert.Equal(3, Directory.GetFiles(_dir).Length);
    }

    [Fact]
    public void A_corrupted_or_truncated_file_is_recompiled_and_replaced()
    {
        var cache = new KernelCache(_dir, FakeCompile, "12.4");
        var image = cache.GetOrCompile("attention", "src", "sm_90", []);
        string path = cache.PathFor("attention", KernelCache.Key("src", "sm_90", "12.4", []));
        var bytes = File.ReadAllBytes(path);
        bytes[^1] ^= 0xFF;
        File.WriteAllBytes(path, bytes);
        Assert.Equal(image, cache.GetOrCompile("attention", "src", "sm_90", []));
        Assert.Equal((2, 1), (_compiles, cache.Corrupted));
        File.WriteAllBytes(path, bytes.AsSpan(0, 10).ToArray());
        Assert.Equal(image, cache.GetOrCompile("attention", "src", "sm_90", []));
        Assert.Equal((3, 2), (_compiles, cache.Corrupted));
        Assert.Equal(image, new KernelCache(_dir, FakeCompile, "12.4").GetOrCompile("attention", "src", "sm_90", []));
        Assert.Equal(3, _compiles);
    }

    [Fact]
    public void An_unwritable_folder_still_returns_the_image_and_says_why_it_was_not_cached()
    {
        string blocker = Path.Combine(Path.GetTempPath(), "peftgen-kernel-cache-file-" + Guid.NewGuid().ToString("N"));
        File.WriteAllText(blocker, "a file where the folder should be");
        try
        {
            var cache = new KernelCache(Path.Combine(blocker, "kernels"), FakeCompile, "12.4");
            Assert.NotEmpty(cache.GetOrCompile("rope", "s", "sm_90", []));
            Assert.Contains(KernelCache.DirectoryVariable, cache.LastWriteError);
        }
        finally
        {
            File.Delete(blocker);
        }
    }

    [Fact]
    public void Compiler_errors_propagate_and_empty_images_are_rejected()
    {
        var failing = new KernelCache(_dir, (_, _, _) => throw new CudaException("NVRTC", "nvrtcCompileProgram", 6, "NVRTC_ERROR_COMPILATION", "log"), "12.4");
        Assert.Throws<CudaException>(() => failing.GetOrCompile("m", "s", "sm_90", []));
        var empty = new KernelCache(_dir, (_, _, _) => [], "12.4");
        Assert.Contains("empty image", Assert.Throws<CudaException>(() => empty.GetOrCompile("m", "s", "sm_90", [])).Message);
        Assert.False(Directory.Exists(_dir) && Directory.GetFiles(_dir).Length > 0);
        Assert.Throws<ArgumentException>(() => new KernelCache(_dir, FakeCompile, "12.4").GetOrCompile("../evil", "s", "sm_90", []));
    }

    [Fact]
    public void Default_folder_prefers_the_variable_then_xdg_then_home()
    {
        Assert.Equal("/k", KernelCache.DefaultDirectory(n => n == KernelCache.DirectoryVariable ? "/k" : "/x", "/home/u"));
        Assert.Equal("/xdg/peftgen/kernels", KernelCache.DefaultDirectory(n => n == "XDG_CACHE_HOME" ? "/xdg" : null, "/home/u"));
        Assert.Equal("/home/u/.cache/peftgen/kernels", KernelCache.DefaultDirectory(_ => null, "/home/u"));
    }
}
