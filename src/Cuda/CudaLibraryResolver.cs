using System.Text;

namespace PeftGen.Backends.Cuda;

/// <summary>The native libraries the CUDA backend binds to.</summary>
internal enum CudaLibraryKind
{
    /// <summary>The driver API, <c>libcuda.so.1</c>, installed with the NVIDIA driver.</summary>
    Driver,

    /// <summary>cuBLAS, <c>libcublas.so.*</c>.</summary>
    Cublas,

    /// <summary>cuBLASLt, <c>libcublasLt.so.*</c>.</summary>
    CublasLt,

    /// <summary>The run-time compiler, <c>libnvrtc.so.*</c>.</summary>
    Nvrtc,
}

/// <summary>
/// What the resolver reads from the machine: environment variables, the home folder and the root that fixed paths
/// such as <c>/usr/local/cuda</c> hang from. Tests pass a fake tree; <see cref="Current"/> is the real machine.
/// </summary>
/// <param name="GetVariable">Reads an environment variable (null when unset).</param>
/// <param name="HomeDirectory">The user's home folder (for <c>~/.local/lib/python3*/site-packages</c>).</param>
/// <param name="FileSystemRoot">Prefix of the fixed system paths ("/" on a real machine).</param>
internal sealed record CudaSearchEnvironment(Func<string, string?> GetVariable, string HomeDirectory, string FileSystemRoot)
{
    /// <summary>This process's environment, home folder and file system.</summary>
    public static CudaSearchEnvironment Current => new(Environment.GetEnvironmentVariable,
        Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), "/");
}

/// <summary>One folder the resolver looks in and why it is on the list.</summary>
/// <param name="Directory">The folder.</param>
/// <param name="Source">Where it came from, for the error message ("CUDA_PATH", "LD_LIBRARY_PATH", ...).</param>
internal readonly record struct CudaSearchDirectory(string Directory, string Source);

/// <summary>The libraries found by one search, and everything that was looked at.</summary>
internal sealed class CudaLibrarySearchResult
{
    private readonly Dictionary<CudaLibraryKind, string> _found;

    private readonly Dictionary<CudaLibraryKind, string> _how;

    internal CudaLibrarySearchResult(Dictionary<CudaLibraryKind, string> found, IReadOnlyList<string> searched, IReadOnlyList<string> notes,
        Dictionary<CudaLibraryKind, string>? how = null)
    {
        _found = found;
        _how = how ?? [];
        Searched = searched;
        Notes = notes;
    }

    /// <summary>Records a library the dynamic loader found after the folders came up short.</summary>
    internal void MarkFound(CudaLibraryKind kind, string path, string how)
    {
        _found[kind] = path;
        _how[kind] = how;
    }

    /// <summary>Why the file of <paramref name="kind"/> was looked at where it was found ("PEFTGEN_LIBCUDA", "python3 on PATH", ...).</summary>
    public string HowFound(CudaLibraryKind kind) => _how.TryGetValue(kind, out var how) ? how : "";

    /// <summary>Every folder or file looked at, in order, each with the reason it was searched.</summary>
    public IReadOnlyList<string> Searched { get; }

    /// <summary>Problems worth telling the user (an override naming a missing file, ...).</summary>
    public IReadOnlyList<string> Notes { get; }

    /// <summary>The names the dynamic loader was asked for, in vain, after the folders came up short (empty when it was not asked).</summary>
    public IReadOnlyList<string> LoaderNames { get; internal set; } = [];

    /// <summary>True when every library was found.</summary>
    public bool IsComplete => _found.Count == Enum.GetValues<CudaLibraryKind>().Length;

    /// <summary>The libraries that were not found.</summary>
    public IEnumerable<CudaLibraryKind> Missing => Enum.GetValues<CudaLibraryKind>().Where(k => !_found.ContainsKey(k));

    /// <summary>The file found for <paramref name="kind"/>, or null.</summary>
    public string? PathOf(CudaLibraryKind kind) => _found.TryGetValue(kind, out var path) ? path : null;

    /// <summary>The exception to throw when the search came up short: what is missing, what was searched, what to do.</summary>
    public CudaNotAvailableException ToException(string? detail = null)
    {
        var text = new StringBuilder("CUDA is not available: ");
        var missing = Missing.ToList();
        text.Append(missing.Count == 0
            ? "the libraries were found but could not be used"
            : "could not find " + string.Join(", ", missing.Select(CudaLibraryResolver.Describe)));
        text.Append('.');
        if (detail != null) text.Append(' ').Append(detail);
        foreach (var kind in Enum.GetValues<CudaLibraryKind>())
            if (PathOf(kind) is { } path) text.Append($"\nFound {CudaLibraryResolver.FilePattern(kind)}: {path}");
        foreach (var note in Notes) text.Append("\nNote: ").Append(note);
        text.Append("\nSearched, in order:");
        foreach (var entry in Searched) text.Append("\n  ").Append(entry);
        text.Append("\n  (and the nvidia/*/lib folders of Python environments under VIRTUAL_ENV, CONDA_PREFIX, the python3 on PATH, ")
            .Append("~/.local/lib/python3*, /usr/local/lib/python3* and /usr/lib/python3*: none exists here unless listed above)");
        if (LoaderNames.Count > 0)
            text.Append("\nThe dynamic loader's own search (LD_LIBRARY_PATH, its cache, run paths) found none of: ").Append(string.Join(", ", LoaderNames)).Append('.');
        text.Append("\nInstall the NVIDIA driver (it provides libcuda.so.1) and CUDA 12 or later (cuBLAS and NVRTC: the CUDA ")
            .Append("toolkit, or `pip install nvidia-cublas nvidia-cuda-nvrtc` (CUDA 13) or `pip install nvidia-cublas-cu12 nvidia-cuda-nvrtc-cu12` ")
            .Append("(CUDA 12) into a Python environment), or point ")
            .Append($"{CudaLibraryResolver.LibraryDirsVariable} (folders separated by ':') or {CudaLibraryResolver.OverrideVariable(CudaLibraryKind.Driver)} / ")
            .Append($"{CudaLibraryResolver.OverrideVariable(CudaLibraryKind.Cublas)} / {CudaLibraryResolver.OverrideVariable(CudaLibraryKind.CublasLt)} / ")
            .Append($"{CudaLibraryResolver.OverrideVariable(CudaLibraryKind.Nvrtc)} (files) at them. Without a GPU, use the CPU (--device cpu).");
        return new CudaNotAvailableException(text.ToString()) { SearchedPaths = Searched };
    }
}

/// <summary>
/// Finds <c>libcuda.so.1</c>, <c>libcublas.so.*</c>, <c>libcublasLt.so.*</c> and <c>libnvrtc.so.*</c> at run time without
/// running any other program. Search order: per-library file overrides (<c>PEFTGEN_LIBCUDA</c>, ...), the folders in
/// <c>PEFTGEN_CUDA_LIB_DIRS</c>, <c>CUDA_PATH</c>, <c>LD_LIBRARY_PATH</c>, <c>/usr/local/cuda</c> then
/// <c>/usr/local/cuda-X.Y</c> (newest first), the distribution's library folders, and the <c>nvidia/*/lib</c> folders
/// of Python environments (<c>VIRTUAL_ENV</c>, <c>CONDA_PREFIX</c>, <c>~/.local</c>, <c>/usr/local/lib</c>,
/// <c>/usr/lib</c>). The first folder holding a library wins; within it the highest version is taken.
/// </summary>
internal static class CudaLibraryResolver
{
    /// <summary>Folders searched before all others, separated by ':'.</summary>
    public const string LibraryDirsVariable = "PEFTGEN_CUDA_LIB_DIRS";

    /// <summary>The environment variable naming the exact file of <paramref name="kind"/>; when set, nothing else is tried for it.</summary>
    public static string OverrideVariable(CudaLibraryKind kind) => kind switch
    {
        CudaLibraryKind.Driver => "PEFTGEN_LIBCUDA",
        CudaLibraryKind.Cublas => "PEFTGEN_LIBCUBLAS",
        CudaLibraryKind.CublasLt => "PEFTGEN_LIBCUBLASLT",
        CudaLibraryKind.Nvrtc => "PEFTGEN_LIBNVRTC",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>The file name stem of <paramref name="kind"/>: a match is exactly this or this followed by ".N[.N…]".</summary>
    public static string Stem(CudaLibraryKind kind) => kind switch
    {
        CudaLibraryKind.Driver => "libcuda.so",
        CudaLibraryKind.Cublas => "libcublas.so",
        CudaLibraryKind.CublasLt => "libcublasLt.so",
        CudaLibraryKind.Nvrtc => "libnvrtc.so",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>The file pattern shown to users (libcuda.so.1, libcublas.so.*, ...).</summary>
    public static string FilePattern(CudaLibraryKind kind) => kind == CudaLibraryKind.Driver ? "libcuda.so.1" : Stem(kind) + ".*";

    /// <summary>A user-facing description of <paramref name="kind"/>.</summary>
    public static string Describe(CudaLibraryKind kind) => kind switch
    {
        CudaLibraryKind.Driver => "libcuda.so.1 (the NVIDIA driver)",
        CudaLibraryKind.Cublas => "libcublas.so.* (cuBLAS)",
        CudaLibraryKind.CublasLt => "libcublasLt.so.* (cuBLASLt)",
        CudaLibraryKind.Nvrtc => "libnvrtc.so.* (NVRTC)",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>Searches the machine described by <paramref name="env"/> for every library.</summary>
    public static CudaLibrarySearchResult Search(CudaSearchEnvironment env)
    {
        ArgumentNullException.ThrowIfNull(env);
        var found = new Dictionary<CudaLibraryKind, string>();
        var how = new Dictionary<CudaLibraryKind, string>();
        var searched = new List<string>();
        var notes = new List<string>();
        var pending = new List<CudaLibraryKind>();
        foreach (var kind in Enum.GetValues<CudaLibraryKind>())
        {
            string variable = OverrideVariable(kind);
            if (env.GetVariable(variable) is { Length: > 0 } file)
            {
                searched.Add($"{file} ({variable})");
                if (File.Exists(file))
                {
                    found[kind] = Path.GetFullPath(file);
                    how[kind] = variable;
                }
                else notes.Add($"{variable} is set to '{file}', which does not exist; fix or unset it.");
            }
            else
            {
                pending.Add(kind);
            }
        }
        foreach (var dir in SearchDirectories(env))
        {
            if (pending.Count == 0) break;
            searched.Add($"{dir.Directory} ({dir.Source})");
            if (!Directory.Exists(dir.Directory)) continue;
            for (int i = pending.Count - 1; i >= 0; i--)
            {
                if (FindInDirectory(dir.Directory, pending[i]) is { } path)
                {
                    found[pending[i]] = path;
                    how[pending[i]] = dir.Source;
                    pending.RemoveAt(i);
                }
            }
        }
        return new CudaLibrarySearchResult(found, searched, notes, how);
    }

    /// <summary>The folders to search, in order, without duplicates (the first mention of a folder keeps its place).</summary>
    public static IReadOnlyList<CudaSearchDirectory> SearchDirectories(CudaSearchEnvironment env)
    {
        var list = new List<CudaSearchDirectory>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        void Add(string? directory, string source)
        {
            if (string.IsNullOrWhiteSpace(directory)) return;
            string full;
            try
            {
                full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
            {
                return; // not a path at all; nothing to search
            }
            if (seen.Add(full)) list.Add(new CudaSearchDirectory(full, source));
        }

        foreach (var dir in SplitPathList(env.GetVariable(LibraryDirsVariable))) Add(dir, LibraryDirsVariable);
        if (env.GetVariable("CUDA_PATH") is { Length: > 0 } cudaPath)
            foreach (var sub in ToolkitLibraryFolders) Add(Path.Combine(cudaPath, sub), "CUDA_PATH");
        foreach (var dir in SplitPathList(env.GetVariable("LD_LIBRARY_PATH"))) Add(dir, "LD_LIBRARY_PATH");

        string usrLocal = Path.Combine(env.FileSystemRoot, "usr", "local");
        foreach (var sub in ToolkitLibraryFolders) Add(Path.Combine(usrLocal, "cuda", sub), "CUDA toolkit");
        foreach (var toolkit in VersionedChildren(usrLocal, "cuda-"))
            foreach (var sub in ToolkitLibraryFolders) Add(Path.Combine(toolkit, sub), "CUDA toolkit");
        foreach (var sub in new[] { "usr/local/nvidia/lib64", "usr/local/nvidia/lib" })
            Add(Path.Combine(env.FileSystemRoot, sub), "container driver");
        foreach (var sub in new[] { "usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu/nvidia/current", "usr/lib64", "usr/lib/wsl/lib" })
            Add(Path.Combine(env.FileSystemRoot, sub), "system libraries");
        foreach (var dir in LdSoConfFolders(env)) Add(dir, "ld.so.conf");

        foreach (var (prefix, source) in PythonPrefixes(env))
        {
            if (source == "CONDA_PREFIX") Add(Path.Combine(prefix, "lib"), source); // conda's cudatoolkit / cuda-libraries
            foreach (var sitePackages in SitePackages(prefix))
                foreach (var lib in NvidiaLibFolders(sitePackages)) Add(lib, $"Python packages, {source}");
        }
        return list;
    }

    /// <summary>
    /// The best file for <paramref name="kind"/> directly in <paramref name="directory"/>: for the driver libcuda.so.1 when
    /// present, otherwise the highest version ("libcublas.so.12.4.5" beats "libcublas.so.12" beats "libcublas.so"); null when none.
    /// </summary>
    public static string? FindInDirectory(string directory, CudaLibraryKind kind)
    {
        string stem = Stem(kind);
        string? best = null;
        int[]? bestVersion = null;
        IEnumerable<string> files;
        try
        {
            files = Directory.EnumerateFileSystemEntries(directory, stem + "*").ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        foreach (var path in files)
        {
            var version = ParseVersion(Path.GetFileName(path), stem);
            if (version == null || !File.Exists(path)) continue;
            if (kind == CudaLibraryKind.Driver && version is [1]) return Path.GetFullPath(path);
            if (bestVersion == null || CompareVersions(version, bestVersion) > 0)
            {
                best = path;
                bestVersion = version;
            }
        }
        return best == null ? null : Path.GetFullPath(best);
    }

    /// <summary>
    /// The version numbers after <paramref name="stem"/> in <paramref name="fileName"/> ("libnvrtc.so.12.4" → [12, 4],
    /// "libnvrtc.so" → []), or null when the name is not the stem followed only by dot-separated numbers.
    /// </summary>
    public static int[]? ParseVersion(string fileName, string stem)
    {
        if (!fileName.StartsWith(stem, StringComparison.Ordinal)) return null;
        var rest = fileName.AsSpan(stem.Length);
        if (rest.IsEmpty) return [];
        if (rest[0] != '.') return null;
        var parts = rest[1..].ToString().Split('.');
        var version = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (parts[i].Length == 0 || !parts[i].All(char.IsAsciiDigit) || !int.TryParse(parts[i], out version[i])) return null;
        return version;
    }

    /// <summary>Orders versions numerically, part by part; a longer version beats its own prefix.</summary>
    public static int CompareVersions(ReadOnlySpan<int> a, ReadOnlySpan<int> b)
    {
        for (int i = 0; i < Math.Min(a.Length, b.Length); i++)
            if (a[i] != b[i]) return a[i].CompareTo(b[i]);
        return a.Length.CompareTo(b.Length);
    }

    private static readonly string[] ToolkitLibraryFolders = ["lib64", Path.Combine("targets", "x86_64-linux", "lib"), "lib"];

    private static IEnumerable<string> SplitPathList(string? value) =>
        string.IsNullOrEmpty(value) ? [] : value.Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    // Children of parent named prefix + version ("cuda-12.4", "python3.11"), highest version first.
    private static IEnumerable<string> VersionedChildren(string parent, string prefix)
    {
        if (!Directory.Exists(parent)) return [];
        try
        {
            return Directory.EnumerateDirectories(parent, prefix + "*")
                .Select(dir => (Dir: dir, Version: ParseVersion(Path.GetFileName(dir), prefix.TrimEnd('-', '.')) ?? ParseLooseVersion(Path.GetFileName(dir)[prefix.Length..])))
                .OrderByDescending(x => x.Version, Comparer<int[]>.Create((a, b) => CompareVersions(a, b)))
                .ThenBy(x => x.Dir, StringComparer.Ordinal)
                .Select(x => x.Dir)
                .ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    // "12.4" → [12, 4]; anything unparsable sorts lowest.
    private static int[] ParseLooseVersion(string text)
    {
        var numbers = new List<int>();
        foreach (var part in text.Split('.'))
        {
            if (!int.TryParse(part, out int n)) break;
            numbers.Add(n);
        }
        return numbers.ToArray();
    }

    private static IEnumerable<(string Prefix, string Source)> PythonPrefixes(CudaSearchEnvironment env)
    {
        if (env.GetVariable("VIRTUAL_ENV") is { Length: > 0 } venv) yield return (venv, "VIRTUAL_ENV");
        if (env.GetVariable("CONDA_PREFIX") is { Length: > 0 } conda) yield return (conda, "CONDA_PREFIX");
        foreach (var prefix in PythonOnPathPrefixes(env)) yield return (prefix, "python3 on PATH");
        if (env.HomeDirectory.Length > 0) yield return (Path.Combine(env.HomeDirectory, ".local"), "~/.local");
        yield return (Path.Combine(env.FileSystemRoot, "usr", "local"), "/usr/local");
        yield return (Path.Combine(env.FileSystemRoot, "usr"), "/usr");
    }

    /// <summary>
    /// The prefixes of the first <c>python3</c> on <c>PATH</c> (an environment that is active through PATH alone, with no
    /// <c>VIRTUAL_ENV</c>, as on many GPU machines): the folder above its <c>bin</c> (a virtual environment's own prefix:
    /// its <c>python3</c> links to the base interpreter, whose prefix does not hold the environment's packages), then, when
    /// <c>python3</c> is a link, the folder above the <c>bin</c> of the file it finally resolves to (the base installation).
    /// </summary>
    public static IReadOnlyList<string> PythonOnPathPrefixes(CudaSearchEnvironment env)
    {
        var prefixes = new List<string>();
        foreach (var dir in SplitPathList(env.GetVariable("PATH")))
        {
            string python;
            try
            {
                python = Path.Combine(Path.GetFullPath(dir), "python3");
                if (!File.Exists(python)) continue;
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException or IOException or UnauthorizedAccessException)
            {
                continue;
            }
            void AddPrefixOf(string file)
            {
                if (Path.GetDirectoryName(Path.GetDirectoryName(file)) is { Length: > 0 } prefix && !prefixes.Contains(prefix)) prefixes.Add(prefix);
            }
            AddPrefixOf(python);
            try
            {
                if (new FileInfo(python).ResolveLinkTarget(returnFinalTarget: true) is { } target) AddPrefixOf(target.FullName);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // a broken or unreadable link: the first prefix stands
            }
            break; // the first python3 on PATH is the one a shell runs
        }
        return prefixes;
    }

    /// <summary>
    /// The folders the dynamic loader's cache is built from: the lines of <c>/etc/ld.so.conf</c> and of the files its
    /// <c>include</c> lines name (globs such as <c>/etc/ld.so.conf.d/*.conf</c>, in name order), in file order. Container
    /// runtimes register the driver's folder there (for example <c>/usr/local/nvidia/lib64</c>).
    /// </summary>
    public static IReadOnlyList<string> LdSoConfFolders(CudaSearchEnvironment env)
    {
        var folders = new List<string>();
        var visited = new HashSet<string>(StringComparer.Ordinal);
        void Read(string file, int depth)
        {
            if (depth > 8 || !visited.Add(file) || !File.Exists(file)) return;
            string[] lines;
            try
            {
                lines = File.ReadAllLines(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return;
            }
            foreach (var raw in lines)
            {
                var line = raw.Split('#')[0].Trim();
                if (line.Length == 0) continue;
                if (line.StartsWith("include", StringComparison.Ordinal) && line.Length > 7 && char.IsWhiteSpace(line[7]))
                {
                    foreach (var pattern in line[8..].Split(' ', '\t').Where(p => p.Length > 0))
                        foreach (var included in Glob(Rooted(env, pattern, Path.GetDirectoryName(file)!))) Read(included, depth + 1);
                }
                else if (line.StartsWith('/'))
                {
                    folders.Add(Rooted(env, line, ""));
                }
            }
        }
        Read(Rooted(env, "/etc/ld.so.conf", ""), 0);
        return folders;
    }

    // An absolute path of the machine under the search's root (relative ones are taken from relativeTo).
    private static string Rooted(CudaSearchEnvironment env, string path, string relativeTo) =>
        path.StartsWith('/') ? Path.Combine(env.FileSystemRoot, path.TrimStart('/')) : Path.Combine(relativeTo, path);

    // The files a pattern with wildcards in its last part names, in ordinal order.
    private static IEnumerable<string> Glob(string pattern)
    {
        string? dir = Path.GetDirectoryName(pattern);
        string name = Path.GetFileName(pattern);
        if (dir == null || !Directory.Exists(dir)) return [];
        if (!name.Contains('*') && !name.Contains('?')) return File.Exists(pattern) ? [pattern] : [];
        try
        {
            return Directory.EnumerateFiles(dir, name).Order(StringComparer.Ordinal).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    /// <summary>
    /// The NVRTC builtins library beside <paramref name="nvrtcPath"/> (NVRTC loads <c>libnvrtc-builtins.so.X.Y</c> at its
    /// first compile, through its run path, which some wheels lack): in NVRTC's folder, then in the folder of the file it
    /// links to, the highest version with NVRTC's major version, else the highest; null when there is none.
    /// </summary>
    public static string? FindNvrtcBuiltins(string nvrtcPath)
    {
        ArgumentNullException.ThrowIfNull(nvrtcPath);
        const string BuiltinsStem = "libnvrtc-builtins.so";
        int? major = ParseVersion(Path.GetFileName(nvrtcPath), Stem(CudaLibraryKind.Nvrtc)) is [var m, ..] ? m : null;
        var folders = new List<string>();
        if (Path.GetDirectoryName(Path.GetFullPath(nvrtcPath)) is { } own) folders.Add(own);
        try
        {
            if (new FileInfo(nvrtcPath).ResolveLinkTarget(returnFinalTarget: true) is { } target)
            {
                if (major == null && ParseVersion(target.Name, Stem(CudaLibraryKind.Nvrtc)) is [var tm, ..]) major = tm;
                if (Path.GetDirectoryName(target.FullName) is { } linked && !folders.Contains(linked)) folders.Add(linked);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // a broken link: NVRTC's own folder is all there is
        }
        foreach (var folder in folders)
        {
            List<(string Path, int[] Version)> candidates;
            try
            {
                candidates = Directory.Exists(folder)
                    ? Directory.EnumerateFileSystemEntries(folder, BuiltinsStem + "*")
                        .Select(p => (Path: p, Version: ParseVersion(Path.GetFileName(p), BuiltinsStem)))
                        .Where(c => c.Version != null && File.Exists(c.Path))
                        .Select(c => (c.Path, c.Version!))
                        .ToList()
                    : [];
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            var best = candidates
                .OrderByDescending(c => major != null && c.Version is [var v, ..] && v == major)
                .ThenByDescending(c => c.Version, Comparer<int[]>.Create((a, b) => CompareVersions(a, b)))
                .Select(c => c.Path)
                .FirstOrDefault();
            if (best != null) return Path.GetFullPath(best);
        }
        return null;
    }

    // prefix/lib/python3*/{site,dist}-packages, newest Python first ("python3" itself, Debian's shared folder, last).
    private static IEnumerable<string> SitePackages(string prefix)
    {
        foreach (var python in VersionedChildren(Path.Combine(prefix, "lib"), "python3"))
            foreach (var name in new[] { "site-packages", "dist-packages" })
            {
                string dir = Path.Combine(python, name);
                if (Directory.Exists(dir)) yield return dir;
            }
    }

    // site-packages/nvidia/*/lib: CUDA 12 wheels put each library in its own package folder (nvidia-cublas-cu12 →
    // nvidia/cublas/lib, nvidia-cuda-nvrtc-cu12 → nvidia/cuda_nvrtc/lib); CUDA 13 wheels share one (nvidia/cu13/lib).
    private static IEnumerable<string> NvidiaLibFolders(string sitePackages)
    {
        string nvidia = Path.Combine(sitePackages, "nvidia");
        if (!Directory.Exists(nvidia)) return [];
        try
        {
            return Directory.EnumerateDirectories(nvidia).Order(StringComparer.Ordinal)
                .Select(pkg => Path.Combine(pkg, "lib")).Where(Directory.Exists).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }
}
