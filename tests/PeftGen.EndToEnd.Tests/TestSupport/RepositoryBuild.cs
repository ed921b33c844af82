using System.Reflection;

namespace PeftGen.EndToEnd.Tests.TestSupport;

/// <summary>
/// The build these tests come from (recorded in the assembly's metadata by the project file): the repository, the
/// configuration and the artifacts path, if any. Commands run with the same settings find the repository's projects
/// already built, so they reuse them instead of compiling them again.
/// </summary>
internal static class RepositoryBuild
{
    private static readonly Dictionary<string, string?> Metadata = typeof(RepositoryBuild).Assembly
        .GetCustomAttributes<AssemblyMetadataAttribute>()
        .ToDictionary(a => a.Key, a => a.Value, StringComparer.Ordinal);

    /// <summary>The repository's root folder.</summary>
    public static string Root => Metadata["RepositoryRoot"]!;

    /// <summary>The configuration the tests were built in (Debug or Release).</summary>
    public static string Configuration => Metadata["Configuration"]!;

    /// <summary>The artifacts path of the build (dotnet's --artifacts-path), or null when outputs went to each project's bin/.</summary>
    public static string? ArtifactsPath => Metadata.GetValueOrDefault("ArtifactsPath");

    /// <summary>The full path of a file in the repository, from its path relative to the root.</summary>
    public static string PathOf(string relativePath) => Path.Combine(Root, relativePath);

    /// <summary>The configuration and artifacts path arguments of a dotnet command on a repository project.</summary>
    public static string[] OutputArguments =>
        ArtifactsPath is null ? ["-c", Configuration] : ["-c", Configuration, "--artifacts-path", ArtifactsPath];

    /// <summary>
    /// A ProjectReference item to a repository project, from a project outside the repository built in
    /// <see cref="Configuration"/>: the reference carries the artifacts path, so only the repository's projects build
    /// there and the referencing project keeps its own bin/ and obj/.
    /// </summary>
    public static string ProjectReference(string relativePath, string metadata = "")
    {
        string artifacts = ArtifactsPath is null ? "" : $"""AdditionalProperties="ArtifactsPath={ArtifactsPath}" """;
        return $"""<ProjectReference Include="{PathOf(relativePath)}" {metadata} {artifacts}/>""";
    }
}
