using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Testing;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Testing;
using PeftGen.Testing;

namespace PeftGen.Analyzers.Tests.TestSupport;

/// <summary>
/// An analyzer test of the Roslyn testing packages that runs every PeftGen analyzer on consumer code compiled as a
/// package consumer's is (net10.0, PeftGen.Runtime, nullable enabled, the latest C# this Roslyn knows). Expected
/// diagnostics are marked in the source, <c>{|PEFT006:v_prj|}</c>: the id and the exact span. A diagnostic not marked, a
/// mark with no diagnostic, or a compiler error fails the test.
/// </summary>
internal sealed class PeftAnalyzerTest : CSharpAnalyzerTest<LoRAAttributeAnalyzer, DefaultVerifier>
{
    /// <summary>Every analyzer in PeftGen.Analyzers, found by reflection so that a new one is tested unasked.</summary>
    private static readonly ImmutableArray<DiagnosticAnalyzer> Analyzers = typeof(DiagnosticCatalog).Assembly.GetTypes()
        .Where(t => typeof(DiagnosticAnalyzer).IsAssignableFrom(t) && !t.IsAbstract)
        .Select(t => (DiagnosticAnalyzer)Activator.CreateInstance(t)!)
        .ToImmutableArray();

    private static readonly ImmutableHashSet<string> AnalyzerIds =
        Analyzers.SelectMany(a => a.SupportedDiagnostics).Select(d => d.Id).ToImmutableHashSet(StringComparer.Ordinal);

    public PeftAnalyzerTest() => ConsumerReferences.AddTo(this);

    /// <summary>The analyzers' diagnostics on the test's sources as they were reported, for their messages and properties.</summary>
    public ImmutableArray<Diagnostic> Reported { get; private set; }

    /// <summary>
    /// Asserts that <paramref name="markup"/>, with <paramref name="additionalFiles"/> (config.json files), produces
    /// exactly its marked diagnostics; returns them as reported.
    /// </summary>
    public static async Task<ImmutableArray<Diagnostic>> VerifyAsync(string markup, params (string Path, string Text)[] additionalFiles)
    {
        var test = new PeftAnalyzerTest { TestCode = markup };
        foreach (var file in additionalFiles) test.TestState.AdditionalFiles.Add(file);
        await test.RunAsync();
        return test.Reported;
    }

    protected override IEnumerable<DiagnosticAnalyzer> GetDiagnosticAnalyzers() => Analyzers;

    protected override CompilationOptions CreateCompilationOptions() =>
        ((CSharpCompilationOptions)base.CreateCompilationOptions()).WithNullableContextOptions(NullableContextOptions.Enable);

    protected override ParseOptions CreateParseOptions() =>
        ((CSharpParseOptions)base.CreateParseOptions()).WithLanguageVersion(LanguageVersion.Latest);

    // The first call is the test state's own run; later ones repeat it in generated code or under #pragma.
    protected override ImmutableArray<(Project project, Diagnostic diagnostic)> FilterDiagnostics(ImmutableArray<(Project project, Diagnostic diagnostic)> diagnostics)
    {
        var filtered = base.FilterDiagnostics(diagnostics);
        if (Reported.IsDefault)
            Reported = filtered.Select(d => d.diagnostic).Where(d => AnalyzerIds.Contains(d.Id)).ToImmutableArray();
        return filtered;
    }
}
