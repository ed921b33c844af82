using System.IO.Compression;
using PeftGen.EndToEnd.Tests.TestSupport;

namespace PeftGen.EndToEnd.Tests;

/// <summary>The PeftGen package as a user gets it: its layout, and a fresh project that restores, builds and runs on it.</summary>
[Collection(EndToEndCollection.Name)]
public sealed class PackageConsumerTests(PackageFeedFixture fixture)
{
    private string Package => Path.Combine(fixture.Feed, "PeftGen.0.1.0.nupkg");

    [Fact]
    public void PackageHoldsTheRuntimeAndTheRoslynComponents()
    {
        Assert.True(fixture.Pack.ExitCode == 0, fixture.Pack.ToString());
        using var package = ZipFile.OpenRead(Package);
        var entries = package.Entries.Select(e => e.FullName).ToHashSet(StringComparer.Ordinal);
        string[] expected =
        [
            "lib/net10.0/PeftGen.Runtime.dll", "analyzers/dotnet/cs/PeftGen.Generator.dll", "analyzers/dotnet/cs/PeftGen.Analyzers.dll",
            "README.md", "PeftGen.nuspec",
        ];
        foreach (var entry in expected) Assert.Contains(entry, entries);
        if (File.Exists(RepositoryBuild.PathOf("src/CodeFixes/PeftGen.CodeFixes.csproj")))
            Assert.Contains("analyzers/dotnet/cs/PeftGen.CodeFixes.dll", entries);
        // The Roslyn components ship inside the package; they must not turn into dependencies on packages that do not exist.
        using var nuspec = new StreamReader(package.GetEntry("PeftGen.nuspec")!.Open());
        Assert.DoesNotContain("PeftGen.Generator", nuspec.ReadToEnd());
    }

    [Fact]
    public void FreshProjectOnThePackageBuildsRunsAndTrainsOneStep()
    {
        Assert.True(fixture.Pack.ExitCode == 0, fixture.Pack.ToString());
        string folder = fixture.NewFolder("package-consumer");
        File.WriteAllText(Path.Combine(folder, "NuGet.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="peftgen-test-feed" value="{fixture.Feed}" />
                <add key="nuget.org" value="https://api.nuget.org/v3/index.json" protocolVersion="3" />
              </packageSources>
            </configuration>
            """);
        Consumer.Write(folder, $"""
              <PropertyGroup>
                <!-- A packages folder of its own: the machine's would go on serving the first PeftGen 0.1.0 it ever restored. -->
                <RestorePackagesPath>{Path.Combine(folder, "packages")}</RestorePackagesPath>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="PeftGen" Version="0.1.0" />
              </ItemGroup>
            """, targets: "q_proj,v_proj");

        var build = DotNet.Run(folder, ["build", .. DotNet.NoBuildServers]);
        Assert.True(build.ExitCode == 0, build.ToString());

        Consumer.AssertRanOneStep(DotNet.Run(folder, "run", "--no-build"), Consumer.QandVTrainableParameters);
    }
}
