using System.Reflection;

namespace PeftGen.Generator.Tests.TestSupport;

/// <summary>
/// The generated files pinned as <c>_snapshots/&lt;case&gt;.verified.cs</c>, where a whole file reads better than an
/// inline string. Set <c>PEFTGEN_ACCEPT_SNAPSHOTS=1</c> to write the generated text as the new snapshot (review the diff
/// before committing it).
/// </summary>
internal static class Snapshot
{
    public const string AcceptVariable = "PEFTGEN_ACCEPT_SNAPSHOTS";

    /// <summary>Whether this run writes snapshots instead of comparing with them.</summary>
    public static bool Accepting => Environment.GetEnvironmentVariable(AcceptVariable) == "1";

    public static string PathOf(string name) => Path.Combine(ProjectDirectory, "_snapshots", name + ".verified.cs");

    /// <summary>The snapshot's text with \n line ends, or null when there is none.</summary>
    public static string? Read(string name) =>
        File.Exists(PathOf(name)) ? File.ReadAllText(PathOf(name)).Replace("\r\n", "\n") : null;

    public static void Write(string name, string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(PathOf(name))!);
        File.WriteAllText(PathOf(name), text.Replace("\r\n", "\n"));
    }

    private static string ProjectDirectory =>
        typeof(Snapshot).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "ProjectDirectory").Value!;
}
