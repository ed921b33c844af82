namespace PeftGen.IO;

/// <summary>
/// Compares file-system paths by what they name, not by how they are spelled: every existing component is resolved
/// through symbolic links (<see cref="FileSystemInfo.ResolveLinkTarget(bool)"/>, to the final target), and the full
/// paths are compared (ignoring case on Windows and macOS). Commands that write a folder use it to refuse an output
/// that is, or lies inside, one of their inputs, however it is reached.
/// </summary>
/// <remarks>Hard links and bind mounts are not detected: that needs device and inode numbers, which .NET does not expose without native code.</remarks>
public static class PathIdentity
{
    private static StringComparison Comparison =>
        OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;

    /// <summary>The full path of <paramref name="path"/> with every existing component's links resolved; missing components are kept as spelled.</summary>
    internal static string Resolve(string path) => Resolve(path, 0);

    private static string Resolve(string path, int depth)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path);
        string root = Path.GetPathRoot(full) ?? "";
        string current = root;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            string next = Path.Combine(current, part);
            string? target = null;
            if (depth < 40)
            {
                try
                {
                    var info = new FileInfo(next);
                    if (info.LinkTarget != null) target = info.ResolveLinkTarget(returnFinalTarget: true)?.FullName;
                }
                catch (IOException)
                {
                    // a link loop or an unreadable link: compare it as spelled
                }
                catch (UnauthorizedAccessException)
                {
                }
            }
            // The target's own folders may be reached through links too: resolve it again.
            current = target != null ? Resolve(target, depth + 1) : next;
        }
        return current.Length > root.Length ? Path.TrimEndingDirectorySeparator(current) : current;
    }

    /// <summary>True when both paths name the same file or folder.</summary>
    internal static bool Same(string a, string b) => string.Equals(Resolve(a), Resolve(b), Comparison);

    /// <summary>True when <paramref name="path"/> is <paramref name="folder"/> or lies somewhere inside it.</summary>
    internal static bool IsSameOrInside(string path, string folder)
    {
        string p = Resolve(path), f = Resolve(folder);
        if (string.Equals(p, f, Comparison)) return true;
        string prefix = f.EndsWith(Path.DirectorySeparatorChar) ? f : f + Path.DirectorySeparatorChar;
        return p.StartsWith(prefix, Comparison);
    }

    /// <summary>
    /// Refuses an output folder that would write into or over an input: the output may not be an input, lie inside an input
    /// folder, or contain an input file under a name the command writes (<paramref name="writtenNames"/>).
    /// </summary>
    /// <param name="outputName">How the output is named to the user (an option such as <c>--output</c>, or a parameter name).</param>
    /// <param name="output">The output folder.</param>
    /// <param name="inputs">Each input, with how it is named to the user ("the base model (--model)"), and its path (file or folder; nulls are skipped).</param>
    /// <param name="writtenNames">File names the command writes into the output folder.</param>
    /// <exception cref="ArgumentException">The output collides with an input; the message names both.</exception>
    public static void EnsureOutputSeparate(string outputName, string output, IEnumerable<(string Name, string? Path)> inputs,
        IReadOnlyCollection<string>? writtenNames = null)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(inputs);
        string resolvedOutput = Resolve(output);
        foreach (var (name, path) in inputs)
        {
            if (string.IsNullOrEmpty(path)) continue;
            string resolvedInput = Resolve(path);
            string where = resolvedInput == Path.TrimEndingDirectorySeparator(Path.GetFullPath(path)) ? "" : $" (which is {resolvedInput})";
            if (string.Equals(resolvedOutput, resolvedInput, Comparison))
                throw new ArgumentException($"{outputName} {output} is {name} {path}{where}: writing there would overwrite {name}. Choose another folder for {outputName}.");
            if (Directory.Exists(resolvedInput) && IsSameOrInside(resolvedOutput, resolvedInput))
                throw new ArgumentException($"{outputName} {output} lies inside {name} {path}{where}: writing there would change {name}. Choose a folder outside it for {outputName}.");
            if (File.Exists(resolvedInput) && writtenNames != null
                && string.Equals(Path.GetDirectoryName(resolvedInput), resolvedOutput, Comparison)
                && writtenNames.Contains(Path.GetFileName(resolvedInput), StringComparer.FromComparison(Comparison)))
                throw new ArgumentException($"{outputName} {output} holds {name} {path}{where}, which would be overwritten. Choose another folder for {outputName}.");
        }
    }
}
