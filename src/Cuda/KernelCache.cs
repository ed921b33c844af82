using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using PeftGen.IO;

namespace PeftGen.Backends.Cuda;

/// <summary>Compiles CUDA source to a loadable image (CUBIN) for one architecture; NVRTC in production, a fake in tests.</summary>
/// <param name="source">The full source.</param>
/// <param name="name">The program name (for compiler messages).</param>
/// <param name="options">Compiler options, the architecture included.</param>
/// <returns>The image bytes.</returns>
internal delegate byte[] KernelCompiler(string source, string name, IReadOnlyList<string> options);

/// <summary>
/// Compiled kernels on disk, keyed by the SHA-256 of everything that determines the image: the source, the target
/// architecture, the compiler's version and the options. A module is compiled once per machine and version; later runs
/// load the file. Files are written atomically and carry a checksum, so a torn or corrupted file is recompiled, never
/// loaded. The cache is an optimisation: when its folder cannot be written, compiled images are still returned.
/// </summary>
internal sealed class KernelCache
{
    /// <summary>Environment variable naming the cache folder.</summary>
    public const string DirectoryVariable = "PEFTGEN_KERNEL_CACHE";

    private static readonly byte[] s_magic = "PGKC0001"u8.ToArray(); // file: magic | sha256(payload) | payload
    private const int HeaderLength = 8 + 32;

    private readonly KernelCompiler _compiler;
    private readonly Lock _lock = new();

    /// <summary>Creates a cache in <paramref name="directory"/> (created on first write).</summary>
    /// <param name="directory">The cache folder.</param>
    /// <param name="compiler">The compiler used on a miss.</param>
    /// <param name="compilerVersion">The compiler's version ("12.4"), part of every key.</param>
    public KernelCache(string directory, KernelCompiler compiler, string compilerVersion)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        Directory = Path.GetFullPath(directory);
        _compiler = compiler ?? throw new ArgumentNullException(nameof(compiler));
        CompilerVersion = compilerVersion ?? throw new ArgumentNullException(nameof(compilerVersion));
    }

    /// <summary>The cache folder.</summary>
    public string Directory { get; }

    /// <summary>The compiler version that is part of every key.</summary>
    public string CompilerVersion { get; }

    /// <summary>Images loaded from disk.</summary>
    public int Hits { get; private set; }

    /// <summary>Images compiled (no valid file existed).</summary>
    public int Misses { get; private set; }

    /// <summary>Files found corrupted (bad header or checksum) and replaced.</summary>
    public int Corrupted { get; private set; }

    /// <summary>The last failure to write a cache file (the image was still used), or null.</summary>
    public string? LastWriteError { get; private set; }

    /// <summary>
    /// The folder to use: <c>PEFTGEN_KERNEL_CACHE</c> when set, else <c>$XDG_CACHE_HOME/peftgen/kernels</c>, else
    /// <c>~/.cache/peftgen/kernels</c>.
    /// </summary>
    public static string DefaultDirectory(Func<string, string?> getVariable, string homeDirectory)
    {
        ArgumentNullException.ThrowIfNull(getVariable);
        if (getVariable(DirectoryVariable) is { Length: > 0 } explicitDir) return Path.GetFullPath(explicitDir);
        if (getVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg) return Path.GetFullPath(Path.Combine(xdg, "peftgen", "kernels"));
        return Path.GetFullPath(Path.Combine(homeDirectory, ".cache", "peftgen", "kernels"));
    }

    /// <summary>
    /// The cache key: lowercase hex SHA-256 over the length-prefixed UTF-8 of the source, the architecture, the compiler
    /// version and each option in order (length prefixes keep "ab"+"c" and "a"+"bc" apart).
    /// </summary>
    public static string Key(string source, string architecture, string compilerVersion, IReadOnlyList<string> options)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var length = new byte[8];
        void Add(string text)
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            BinaryPrimitives.WriteInt64LittleEndian(length, bytes.Length);
            hash.AppendData(length);
            hash.AppendData(bytes);
        }
        Add(source);
        Add(architecture);
        Add(compilerVersion);
        BinaryPrimitives.WriteInt64LittleEndian(length, options.Count);
        hash.AppendData(length);
        foreach (var option in options) Add(option);
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>The file an image with this name and key lives in.</summary>
    public string PathFor(string name, string key) => Path.Combine(Directory, $"{name}-{key}.cubin");

    /// <summary>
    /// The image of <paramref name="source"/> for <paramref name="architecture"/>: read from the cache when a valid file
    /// exists, otherwise compiled and stored.
    /// </summary>
    /// <param name="name">A file-name-safe module name ("attention").</param>
    /// <param name="source">The full source.</param>
    /// <param name="architecture">The target ("sm_90").</param>
    /// <param name="options">Compiler options (the architecture option included).</param>
    public byte[] GetOrCompile(string name, string source, string architecture, IReadOnlyList<string> options)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || name.Contains('/'))
            throw new ArgumentException($"Kernel module name '{name}' is not a valid file name.", nameof(name));
        string key = Key(source, architecture, CompilerVersion, options);
        string path = PathFor(name, key);
        lock (_lock)
        {
            if (TryRead(path) is { } cached)
            {
                Hits++;
                return cached;
            }
            var image = _compiler(source, name, options);
            if (image.Length == 0) throw new CudaException($"Compiling CUDA module '{name}' for {architecture} produced an empty image.");
            Misses++;
            Write(path, image);
            return image;
        }
    }

    private byte[]? TryRead(string path)
    {
        byte[] file;
        try
        {
            if (!File.Exists(path)) return null;
            file = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        if (file.Length > HeaderLength && file.AsSpan(0, 8).SequenceEqual(s_magic))
        {
            var payload = file.AsSpan(HeaderLength);
            if (SHA256.HashData(payload).AsSpan().SequenceEqual(file.AsSpan(8, 32))) return payload.ToArray();
        }
        Corrupted++;
        return null;
    }

    private void Write(string path, byte[] image)
    {
        var file = new byte[HeaderLength + image.Length];
        s_magic.CopyTo(file, 0);
        SHA256.HashData(image).CopyTo(file, 8);
        image.CopyTo(file, HeaderLength);
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            AtomicFile.WriteAllBytes(path, file);
            LastWriteError = null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LastWriteError = $"Could not write the kernel cache file {path}: {e.Message} (kernels are compiled again next run; set {DirectoryVariable} to a writable folder).";
        }
    }
}
