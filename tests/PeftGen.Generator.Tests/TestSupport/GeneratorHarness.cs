using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.Text;

namespace PeftGen.Generator.Tests.TestSupport;

/// <summary>Compiles consumer code against the runtime and runs <see cref="PeftGenerator"/> on it.</summary>
internal static class GeneratorHarness
{
    public static readonly CSharpParseOptions ParseOptions =
        new(LanguageVersion.Latest, DocumentationMode.Diagnose);

    private static readonly ImmutableArray<MetadataReference> References = LoadReferences();

    public static CSharpCompilation Compile(params string[] sources) =>
        CSharpCompilation.Create(
            "Consumer",
            sources.Select((s, i) => CSharpSyntaxTree.ParseText(s, ParseOptions, path: $"Source{i}.cs")),
            References,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));

    public static GeneratorDriver CreateDriver(IEnumerable<AdditionalText>? additionalTexts = null) =>
        CSharpGeneratorDriver.Create(
            new[] { new PeftGenerator().AsSourceGenerator() },
            additionalTexts,
            ParseOptions,
            optionsProvider: null,
            new GeneratorDriverOptions(IncrementalGeneratorOutputKind.None, trackIncrementalGeneratorSteps: true));

    /// <summary>Runs the generator once and returns the compilation with the generated files added.</summary>
    public static (Compilation Output, GeneratorDriverRunResult Result) Run(GeneratorCase testCase)
    {
        var compilation = Compile(testCase.Sources);
        var driver = CreateDriver(testCase.AdditionalFiles.Select(f => new InMemoryAdditionalText(f.Path, f.Text)));
        driver = driver.RunGeneratorsAndUpdateCompilation(compilation, out var output, out var generatorDiagnostics);
        Assert.Empty(generatorDiagnostics);
        return (output, driver.GetRunResult());
    }

    /// <summary>The single file the generator produced for <paramref name="testCase"/>.</summary>
    public static string GeneratedText(GeneratorCase testCase)
    {
        var (_, result) = Run(testCase);
        var source = Assert.Single(Assert.Single(result.Results).GeneratedSources);
        return source.SourceText.ToString();
    }

    // The test host runs on the same framework the consumer targets; its trusted assemblies include PeftGen.Runtime.
    private static ImmutableArray<MetadataReference> LoadReferences()
    {
        var paths = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Append(typeof(PeftGen.Nn.Module).Assembly.Location)
            .Where(p => p.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            .Distinct(StringComparer.Ordinal);
        return paths.Select(p => (MetadataReference)MetadataReference.CreateFromFile(p)).ToImmutableArray();
    }

    private sealed class InMemoryAdditionalText(string path, string text) : AdditionalText
    {
        private readonly SourceText _text = SourceText.From(text);

        public override string Path { get; } = path;

        public override SourceText GetText(CancellationToken cancellationToken = default) => _text;
    }
}

/// <summary>A consumer program: sources and additional files (config.json).</summary>
internal sealed record GeneratorCase(string[] Sources, (string Path, string Text)[] AdditionalFiles)
{
    public GeneratorCase(params string[] sources) : this(sources, []) { }
}
