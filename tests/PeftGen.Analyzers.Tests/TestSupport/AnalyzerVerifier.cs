using System.Collections.Immutable;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Text;

namespace PeftGen.Analyzers.Tests.TestSupport;

/// <summary>
/// Runs every PeftGen analyzer on consumer code and asserts the exact diagnostics. Expected diagnostics are marked in
/// the source as <c>{|PEFT006:text|}</c>: the id and the exact span it must cover. Any diagnostic not marked, or a mark
/// with no diagnostic, fails the test. The code itself must compile without errors, so a test cannot pass by accident.
/// </summary>
internal static class AnalyzerVerifier
{
    private static readonly Regex Markup = new(@"\{\|(?<id>[A-Z]+[0-9]+):(?<text>.*?)\|\}", RegexOptions.Singleline);

    private static readonly CSharpParseOptions ParseOptions = new(LanguageVersion.Latest);

    private static readonly ImmutableArray<MetadataReference> References = LoadReferences();

    private static readonly ImmutableArray<DiagnosticAnalyzer> Analyzers = typeof(DiagnosticCatalog).Assembly.GetTypes()
        .Where(t => typeof(DiagnosticAnalyzer).IsAssignableFrom(t) && !t.IsAbstract)
        .Select(t => (DiagnosticAnalyzer)Activator.CreateInstance(t)!)
        .ToImmutableArray();

    /// <summary>Asserts that <paramref name="markup"/> produces exactly its marked diagnostics; returns them.</summary>
    public static async Task<ImmutableArray<Diagnostic>> VerifyAsync(string markup, params (string Path, string Text)[] additionalFiles)
    {
        var (source, expected) = Parse(markup);
        var compilation = Compile(source);
        Assert.Empty(compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error));

        var exceptions = new List<Exception>();
        var options = new CompilationWithAnalyzersOptions(
            Options(additionalFiles),
            (exception, _, _) =>
            {
                lock (exceptions) exceptions.Add(exception);
            },
            concurrentAnalysis: true,
            logAnalyzerExecutionTime: false);
        var diagnostics = await compilation.WithAnalyzers(Analyzers, options).GetAnalyzerDiagnosticsAsync();
        Assert.Empty(exceptions);

        var actual = diagnostics.OrderBy(d => d.Location.SourceSpan.Start).ThenBy(d => d.Id).Select(d => Describe(source, d.Id, d.Location.SourceSpan)).ToList();
        var wanted = expected.OrderBy(e => e.Span.Start).ThenBy(e => e.Id).Select(e => Describe(source, e.Id, e.Span)).ToList();
        Assert.True(wanted.SequenceEqual(actual),
            "Expected:\n  " + string.Join("\n  ", wanted) + "\nActual:\n  " + string.Join("\n  ", diagnostics.Select(d => Describe(source, d.Id, d.Location.SourceSpan) + ": " + d.GetMessage())));
        return diagnostics;
    }

    /// <summary>A consumer compilation of <paramref name="source"/> that references the PeftGen runtime.</summary>
    public static CSharpCompilation Compile(string source) =>
        CSharpCompilation.Create("Consumer", [CSharpSyntaxTree.ParseText(source, ParseOptions, path: "Source0.cs")], References,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));

    /// <summary>Analyzer options carrying <paramref name="additionalFiles"/> as in-memory additional files.</summary>
    public static AnalyzerOptions Options(params (string Path, string Text)[] additionalFiles) =>
        new(additionalFiles.Select(f => (AdditionalText)new InMemoryAdditionalText(f.Path, f.Text)).ToImmutableArray());

    private static (string Source, List<(string Id, TextSpan Span)> Expected) Parse(string markup)
    {
        var source = new StringBuilder();
        var expected = new List<(string, TextSpan)>();
        int last = 0;
        foreach (Match match in Markup.Matches(markup))
        {
            source.Append(markup, last, match.Index - last);
            var text = match.Groups["text"].Value;
            expected.Add((match.Groups["id"].Value, new TextSpan(source.Length, text.Length)));
            source.Append(text);
            last = match.Index + match.Length;
        }
        source.Append(markup, last, markup.Length - last);
        return (source.ToString(), expected);
    }

    private static string Describe(string source, string id, TextSpan span) =>
        $"{id} at {span.Start}..{span.End} '{source.Substring(span.Start, span.Length)}'";

    // The test host runs on the framework the consumer targets; its trusted assemblies include PeftGen.Runtime.
    private static ImmutableArray<MetadataReference> LoadReferences() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Append(typeof(PeftGen.Nn.Module).Assembly.Location)
            .Where(p => p.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            .Distinct(StringComparer.Ordinal)
            .Select(p => (MetadataReference)MetadataReference.CreateFromFile(p))
            .ToImmutableArray();

    private sealed class InMemoryAdditionalText(string path, string text) : AdditionalText
    {
        private readonly SourceText _text = SourceText.From(text);

        public override string Path { get; } = path;

        public override SourceText GetText(CancellationToken cancellationToken = default) => _text;
    }
}
