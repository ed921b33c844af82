using System.Runtime.InteropServices;

namespace PeftGen.EndToEnd.Tests.TestSupport;

/// <summary>
/// A test that publishes with NativeAOT for linux-x64: it skips, saying why, on other systems and where no C toolchain
/// (clang or gcc, which NativeAOT links with) is on PATH.
/// </summary>
public sealed class NativeToolchainFactAttribute : FactAttribute
{
    private static readonly string[] SearchPath =
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries);

    public NativeToolchainFactAttribute()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.OSArchitecture != Architecture.X64)
            Skip = $"the NativeAOT test publishes for linux-x64; this is {RuntimeInformation.RuntimeIdentifier}";
        else if (!HasGcc && !OnPath("clang"))
            Skip = $"NativeAOT links with clang or gcc; neither is on PATH ({string.Join(Path.PathSeparator, SearchPath)})";
    }

    /// <summary>Whether gcc is on PATH (the test links with it where it can).</summary>
    public static bool HasGcc => OnPath("gcc");

    private static bool OnPath(string program) => SearchPath.Any(folder => File.Exists(Path.Combine(folder, program)));
}
