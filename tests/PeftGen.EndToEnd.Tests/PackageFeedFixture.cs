using PeftGen.EndToEnd.Tests.TestSupport;

namespace PeftGen.EndToEnd.Tests;

/// <summary>
/// Packs the PeftGen and PeftGen.Cuda packages once for the whole collection into a temporary folder feed. The packs do
/// not build: the test project's references have built the runtime (with its generator, analyzers and code fixes) and
/// the CUDA backend already.
/// </summary>
public sealed class PackageFeedFixture : IDisposable
{
    private readonly TempDirectory _root = new("peftgen-e2e");

    public PackageFeedFixture()
    {
        Feed = _root["feed"];
        Pack = DotNet.Run(RepositoryBuild.Root,
            ["pack", RepositoryBuild.PathOf("src/Runtime/PeftGen.Runtime.csproj"), "--no-build", "-o", Feed, .. RepositoryBuild.OutputArguments]);
        CudaPack = DotNet.Run(RepositoryBuild.Root,
            ["pack", RepositoryBuild.PathOf("src/Cuda/PeftGen.Cuda.csproj"), "--no-build", "-o", Feed, .. RepositoryBuild.OutputArguments]);
    }

    /// <summary>The folder holding PeftGen.0.1.0.nupkg, once <see cref="Pack"/> has succeeded.</summary>
    public string Feed { get; }

    /// <summary>The pack command's result; tests that need the package assert on it, so a failed pack fails only them.</summary>
    internal CommandResult Pack { get; }

    /// <summary>The result of packing PeftGen.Cuda (PeftGen.Cuda.0.1.0.nupkg in <see cref="Feed"/>).</summary>
    internal CommandResult CudaPack { get; }

    /// <summary>A fresh folder for a test's consumer projects, deleted with the fixture.</summary>
    public string NewFolder(string name)
    {
        string folder = _root[$"{name}-{Guid.NewGuid():N}"];
        Directory.CreateDirectory(folder);
        return folder;
    }

    public void Dispose() => _root.Dispose();
}

/// <summary>
/// The end-to-end tests: they run dotnet pack, build and run, each using both cores, so they run one at a time in a
/// collection of their own, beside the other test assemblies.
/// </summary>
[CollectionDefinition(Name)]
public sealed class EndToEndCollection : ICollectionFixture<PackageFeedFixture>
{
    public const string Name = "End to end";
}
