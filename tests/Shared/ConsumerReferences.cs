using System.Collections.Immutable;
using System.Reflection;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Testing;

namespace PeftGen.Testing;

/// <summary>
/// What a project that references the PeftGen package compiles against, for the tests on the Roslyn testing packages:
/// net10.0's reference assemblies, PeftGen.Runtime, and the global usings the package's build files add.
/// </summary>
internal static class ConsumerReferences
{
    /// <summary>
    /// The global usings a consumer with implicit usings gets from the package (src/Runtime/build/PeftGen.props), as the
    /// SDK (10.0) writes them into its GlobalUsings.g.cs: the DSL's namespace and a static using of the quantization type enum,
    /// so that <c>[Quantize(NF4, DoubleQuant = true)]</c> compiles.
    /// </summary>
    public const string PackageGlobalUsings = """
        global using PeftGen;
        global using static PeftGen.Quantization.QuantType;
        """;

    /// <summary>
    /// The reference assemblies of a test: none from a package. The testing packages' <c>ReferenceAssemblies.Net.Net100</c>
    /// would download Microsoft.NETCore.App.Ref 10.0.1 at test time, a version the package feed here does not serve;
    /// <see cref="All"/> holds the same assemblies from the SDK's targeting pack, added as references.
    /// </summary>
    public static ReferenceAssemblies ReferenceAssemblies { get; } = new("net10.0");

    /// <summary>The net10.0 reference assemblies (Microsoft.NETCore.App.Ref) of the SDK that built the tests.</summary>
    public static ImmutableArray<MetadataReference> Framework { get; } = LoadFramework();

    /// <summary>PeftGen.Runtime: the attributes, modules and models the consumer code uses.</summary>
    public static MetadataReference Runtime { get; } = MetadataReference.CreateFromFile(typeof(PeftGen.Nn.Module).Assembly.Location);

    /// <summary>The framework and the runtime, created once so that every test shares their metadata.</summary>
    public static ImmutableArray<MetadataReference> All { get; } = Framework.Add(Runtime);

    /// <summary>Makes <paramref name="test"/> compile as a consumer of the package does.</summary>
    public static void AddTo<TVerifier>(AnalyzerTest<TVerifier> test)
        where TVerifier : IVerifier, new()
    {
        test.ReferenceAssemblies = ReferenceAssemblies;
        test.TestState.AdditionalReferences.AddRange(All);
    }

    private static ImmutableArray<MetadataReference> LoadFramework()
    {
        // Recorded by tests/Shared/RoslynTesting.props: the SDK knows where its targeting pack is; the test host does not.
        string folder = typeof(ConsumerReferences).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "NetCoreAppReferenceAssemblies").Value!;
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"The net10.0 reference assemblies are not at {folder}: rebuild the tests with the SDK that will run them.");
        return Directory.GetFiles(folder, "*.dll").Order(StringComparer.Ordinal)
            .Select(path => (MetadataReference)MetadataReference.CreateFromFile(path))
            .ToImmutableArray();
    }
}
