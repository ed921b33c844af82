using System.IO.Compression;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Text.Json;
using System.Text.RegularExpressions;
using PeftGen.EndToEnd.Tests.TestSupport;

namespace PeftGen.EndToEnd.Tests;

/// <summary>
/// The PeftGen and PeftGen.Cuda packages as a user gets them: their layout (the runtime holds no CUDA code), and fresh
/// projects that restore, build and run on them.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class PackageConsumerTests(PackageFeedFixture fixture)
{
    private string Package => Path.Combine(fixture.Feed, "PeftGen.0.1.0.nupkg");

    private string CudaPackage => Path.Combine(fixture.Feed, "PeftGen.Cuda.0.1.0.nupkg");

    [Fact]
    public void PackageHoldsTheRuntimeAndTheRoslynComponents()
    {
        Assert.True(fixture.Pack.ExitCode == 0, fixture.Pack.ToString());
        using var package = ZipFile.OpenRead(Package);
        var entries = package.Entries.Select(e => e.FullName).ToHashSet(StringComparer.Ordinal);
        string[] expected =
        [
            "lib/net10.0/PeftGen.Runtime.dll", "analyzers/dotnet/cs/PeftGen.Generator.dll", "analyzers/dotnet/cs/PeftGen.Analyzers.dll",
            "build/PeftGen.props", "buildTransitive/PeftGen.props", "README.md", "PeftGen.nuspec",
        ];
        foreach (var entry in expected) Assert.Contains(entry, entries);
        if (File.Exists(RepositoryBuild.PathOf("src/CodeFixes/PeftGen.CodeFixes.csproj")))
            Assert.Contains("analyzers/dotnet/cs/PeftGen.CodeFixes.dll", entries);
        // The Roslyn components ship inside the package; they must not turn into dependencies on packages that do not exist.
        using var nuspec = new StreamReader(package.GetEntry("PeftGen.nuspec")!.Open());
        Assert.DoesNotContain("PeftGen.Generator", nuspec.ReadToEnd());

        // No native code in the runtime: the CUDA backend, its bindings and its kernel sources ship in PeftGen.Cuda.
        Assert.DoesNotContain(entries, e => e.Contains("Cuda", StringComparison.OrdinalIgnoreCase) || e.EndsWith(".cu", StringComparison.Ordinal));
        var runtime = AssemblyContents.Read(package, "lib/net10.0/PeftGen.Runtime.dll");
        Assert.DoesNotContain(runtime.Types, t => t.Contains("Cuda", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(runtime.Resources, r => r.Contains("Cuda", StringComparison.OrdinalIgnoreCase) || r.EndsWith(".cu", StringComparison.Ordinal) || r.EndsWith(".cuh", StringComparison.Ordinal));
        Assert.DoesNotContain("PeftGen.Cuda", runtime.References);
        Assert.Contains("PeftGen.Backends.DeviceBackends", runtime.Types);
    }

    [Fact]
    public void CudaPackageHoldsTheBackendAndItsKernelsAndDependsOnPeftGen()
    {
        Assert.True(fixture.CudaPack.ExitCode == 0, fixture.CudaPack.ToString());
        using var package = ZipFile.OpenRead(CudaPackage);
        var entries = package.Entries.Select(e => e.FullName).ToHashSet(StringComparer.Ordinal);
        foreach (var entry in new[] { "lib/net10.0/PeftGen.Cuda.dll", "README.md", "PeftGen.Cuda.nuspec" }) Assert.Contains(entry, entries);
        Assert.DoesNotContain("lib/net10.0/PeftGen.Runtime.dll", entries);
        using var nuspec = new StreamReader(package.GetEntry("PeftGen.Cuda.nuspec")!.Open());
        Assert.Matches("<dependency id=\"PeftGen\" version=\"0\\.1\\.0\"", nuspec.ReadToEnd());

        var cuda = AssemblyContents.Read(package, "lib/net10.0/PeftGen.Cuda.dll");
        Assert.Contains("PeftGen.Backends.Cuda.CudaSupport", cuda.Types);
        Assert.Contains("PeftGen.Runtime", cuda.References);
        var kernels = Directory.GetFiles(RepositoryBuild.PathOf("src/Cuda/Kernels")).Select(Path.GetFileName).ToList();
        Assert.NotEmpty(kernels);
        foreach (var kernel in kernels) Assert.Contains($"PeftGen.Cuda.Kernels.{kernel}", cuda.Resources);
    }

    [Fact]
    public void FreshProjectOnThePackageBuildsRunsAndTrainsOneStep()
    {
        Assert.True(fixture.Pack.ExitCode == 0, fixture.Pack.ToString());
        string folder = fixture.NewFolder("package-consumer");
        WriteNuGetConfig(folder);
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

    [Fact]
    public void FreshProjectWritesTheDslAsTheDesignDoes()
    {
        // [Quantize(NF4, DoubleQuant = true)] with no using of PeftGen or PeftGen.Quantization: the package's implicit usings.
        Assert.True(fixture.Pack.ExitCode == 0, fixture.Pack.ToString());
        string folder = fixture.NewFolder("short-form-consumer");
        WriteNuGetConfig(folder);
        string project = Consumer.Write(folder, $"""
              <PropertyGroup>
                <RestorePackagesPath>{Path.Combine(folder, "packages")}</RestorePackagesPath>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="PeftGen" Version="0.1.0" />
              </ItemGroup>
            """, targets: "all-linear");
        Consumer.SetModel(folder, """
            using PeftGen.Models.Llama;

            [LoRA(rank: 4, targets: "all-linear")]
            [Quantize(NF4, DoubleQuant = true)]
            [ModelConfig("config.json")]
            """);

        var build = DotNet.Run(folder, ["build", .. DotNet.NoBuildServers]);
        Assert.True(build.ExitCode == 0, build.ToString());
        Assert.DoesNotMatch(@"warning [A-Z]+\d+", build.Output);
        Consumer.AssertRanOneStep(DotNet.Run(folder, "run", "--no-build"), Consumer.AllLinearTrainableParameters);

        // The SDK wrote the package's Using items into the project's global usings.
        string globalUsings = File.ReadAllText(Directory.GetFiles(Path.Combine(folder, "obj"), "Tiny.GlobalUsings.g.cs", SearchOption.AllDirectories).Single());
        Assert.Contains("global using PeftGen;", globalUsings);
        Assert.Contains("global using static PeftGen.Quantization.QuantType;", globalUsings);

        // They follow the SDK's ImplicitUsings, and PeftGenImplicitUsings turns them off (or on without the SDK's).
        Assert.Equal(["PeftGen", "PeftGen.Quantization.QuantType"], PackageUsings(project));
        Assert.Empty(PackageUsings(project, "-p:PeftGenImplicitUsings=false"));
        Assert.Empty(PackageUsings(project, "-p:ImplicitUsings=disable"));
        Assert.Equal(["PeftGen", "PeftGen.Quantization.QuantType"], PackageUsings(project, "-p:ImplicitUsings=disable", "-p:PeftGenImplicitUsings=true"));
    }

    /// <summary>The Using items the package adds to <paramref name="project"/> under <paramref name="properties"/>, as MSBuild evaluates them.</summary>
    private static List<string> PackageUsings(string project, params string[] properties)
    {
        var evaluation = DotNet.Run(Path.GetDirectoryName(project)!, ["msbuild", project, "-getItem:Using", .. properties]);
        Assert.True(evaluation.ExitCode == 0, evaluation.ToString());
        using var json = JsonDocument.Parse(evaluation.Output);
        if (!json.RootElement.GetProperty("Items").TryGetProperty("Using", out var usings)) return [];
        return usings.EnumerateArray()
            .Where(item => item.GetProperty("DefiningProjectName").GetString() == "PeftGen")
            .Select(item => item.GetProperty("Identity").GetString()!)
            .ToList();
    }

    [Fact]
    public void FreshProjectOnBothPackagesRegistersTheCudaBackend()
    {
        Assert.True(fixture.Pack.ExitCode == 0, fixture.Pack.ToString());
        Assert.True(fixture.CudaPack.ExitCode == 0, fixture.CudaPack.ToString());
        string folder = fixture.NewFolder("cuda-package-consumer");
        WriteNuGetConfig(folder);
        Consumer.Write(folder, $"""
              <PropertyGroup>
                <RestorePackagesPath>{Path.Combine(folder, "packages")}</RestorePackagesPath>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="PeftGen" Version="0.1.0" />
                <PackageReference Include="PeftGen.Cuda" Version="0.1.0" />
              </ItemGroup>
            """, targets: "q_proj,v_proj");
        File.WriteAllText(Path.Combine(folder, "Program.cs"), """
            using PeftGen.Backends;
            using PeftGen.Backends.Cuda;
            using PeftGen.Tensors;
            using PeftGen.Training;

            Console.WriteLine($"registered before: {DeviceBackends.IsRegistered(DeviceType.Cuda)}");
            try
            {
                ComputeDevice.Resolve("cuda");
            }
            catch (DeviceNotAvailableException e)
            {
                Console.WriteLine($"unregistered: {e.Message}");
            }
            CudaSupport.Register();
            Console.WriteLine($"registered after: {DeviceBackends.IsRegistered(DeviceType.Cuda)}");
            try
            {
                Console.WriteLine($"cuda: {ComputeDevice.Resolve("cuda")}");
            }
            catch (CudaNotAvailableException)
            {
                Console.WriteLine("cuda: not available");
            }
            """);

        var build = DotNet.Run(folder, ["build", .. DotNet.NoBuildServers]);
        Assert.True(build.ExitCode == 0, build.ToString());
        var run = DotNet.Run(folder, "run", "--no-build");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("registered before: False", run.Output);
        Assert.Contains("unregistered: Device 'cuda:0' needs the CUDA backend", run.Output);
        Assert.Contains("CudaSupport.Register()", run.Output);
        Assert.Contains("registered after: True", run.Output);
        Assert.Matches(new Regex(@"^cuda: (cuda:0|not available)\r?$", RegexOptions.Multiline), run.Output);
    }

    private void WriteNuGetConfig(string folder) =>
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

    /// <summary>The type names, manifest resources and referenced assemblies of a DLL inside a package, read as metadata (never loaded).</summary>
    private sealed record AssemblyContents(IReadOnlyList<string> Types, IReadOnlyList<string> Resources, IReadOnlyList<string> References)
    {
        public static AssemblyContents Read(ZipArchive package, string entry)
        {
            var bytes = new MemoryStream();
            using (var stream = package.GetEntry(entry)!.Open()) stream.CopyTo(bytes);
            bytes.Position = 0;
            using var pe = new PEReader(bytes);
            var md = pe.GetMetadataReader();
            var types = md.TypeDefinitions.Select(md.GetTypeDefinition)
                .Select(t => md.GetString(t.Namespace) is { Length: > 0 } ns ? $"{ns}.{md.GetString(t.Name)}" : md.GetString(t.Name)).ToList();
            var resources = md.ManifestResources.Select(h => md.GetString(md.GetManifestResource(h).Name)).ToList();
            var references = md.AssemblyReferences.Select(h => md.GetString(md.GetAssemblyReference(h).Name)).ToList();
            return new AssemblyContents(types, resources, references);
        }
    }
}
