using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CodeActions;
using Microsoft.CodeAnalysis.CodeFixes;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Testing;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Testing;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Testing;
using Xunit;

namespace PeftGen.CodeFixes.Tests.TestSupport;

/// <summary>What the code-fix tests share: the analyzers that report fixable ids, and diagnostics a test constructs.</summary>
internal static class PeftCodeFixTest
{
    /// <summary>Every analyzer in PeftGen.Analyzers, found by reflection so that new ones are picked up unasked.</summary>
    public static ImmutableArray<DiagnosticAnalyzer> Analyzers { get; } =
        Catalog.AnalyzersAssembly.GetTypes()
            .Where(type => !type.IsAbstract && typeof(DiagnosticAnalyzer).IsAssignableFrom(type) && type.GetConstructor(Type.EmptyTypes) != null)
            .Select(type => (DiagnosticAnalyzer)Activator.CreateInstance(type)!)
            .ToImmutableArray();

    /// <summary>Builds the diagnostics a test expects, from the document's tree and the spans its markup marks with the id.</summary>
    public delegate IEnumerable<Diagnostic> DiagnosticFactory(SyntaxTree tree, ImmutableArray<TextSpan> spans);

    /// <summary>Whether some analyzer of PeftGen.Analyzers reports <paramref name="id"/>.</summary>
    public static bool HasAnalyzerFor(string id) => AnalyzersFor(id).Any();

    public static IEnumerable<DiagnosticAnalyzer> AnalyzersFor(string id) =>
        Analyzers.Where(analyzer => analyzer.SupportedDiagnostics.Any(descriptor => descriptor.Id == id));
}

/// <summary>
/// A code-fix test of the Roslyn testing packages for <typeparamref name="TCodeFix"/>, on consumer code compiled as a
/// package consumer's is. The source marks each diagnostic the fix is to fix, <c>{|PEFT001:StoryTeller|}</c>; the test
/// applies the fix one diagnostic at a time and through its fix-all provider (in the document, project and solution),
/// and each must give the fixed code, which must compile and leave none of the fix's diagnostics. The fix may offer at
/// most one action per diagnostic.
/// </summary>
internal sealed class PeftCodeFixTest<TCodeFix> : CSharpCodeFixTest<EmptyDiagnosticAnalyzer, TCodeFix, DefaultVerifier>
    where TCodeFix : CodeFixProvider, new()
{
    private readonly ImmutableArray<DiagnosticAnalyzer> _analyzers;

    private PeftCodeFixTest(ImmutableArray<DiagnosticAnalyzer> analyzers, string markup, string fixedCode, string? title)
    {
        ConsumerReferences.AddTo(this);
        _analyzers = analyzers;
        TestCode = markup;
        FixedCode = fixedCode;
        if (title != null) CodeActionVerifier = (action, verifier) =>
                verifier.Equal(title, action.Title, $"title of the code action: expected '{title}', found '{action.Title}'");
    }

    /// <summary>
    /// Verifies the fix on the diagnostics of the analyzers that report its ids (their other diagnostics are switched
    /// off): the marks must be exactly where the analyzers report, and the fix must turn the source into
    /// <paramref name="fixedCode"/>; with <paramref name="title"/>, the title of its action; with
    /// <paramref name="equivalenceKey"/>, the action that has it.
    /// </summary>
    public static Task VerifyAsync(string markup, string fixedCode, string? title = null, string? equivalenceKey = null)
    {
        var fixable = new TCodeFix().FixableDiagnosticIds;
        var analyzers = fixable.SelectMany(PeftCodeFixTest.AnalyzersFor).Distinct().ToImmutableArray();
        Assert.False(analyzers.IsEmpty, $"No analyzer reports {string.Join(", ", fixable)}.");
        var test = new PeftCodeFixTest<TCodeFix>(analyzers, markup, fixedCode, title) { CodeActionEquivalenceKey = equivalenceKey };
        test.DisabledDiagnostics.AddRange(analyzers.SelectMany(a => a.SupportedDiagnostics).Select(d => d.Id).Where(id => !fixable.Contains(id)).Distinct());
        return test.RunAsync();
    }

    /// <summary>
    /// Verifies the fix on diagnostics the test constructs (<paramref name="constructed"/>, from the spans marked with the
    /// fix's id) where it is about a location or a property the analyzers may not choose. <paramref name="fixedCode"/>
    /// equal to <paramref name="markup"/> means the fix must offer nothing.
    /// </summary>
    public static Task VerifyAsync(string markup, PeftCodeFixTest.DiagnosticFactory constructed, string fixedCode, string? title = null)
    {
        TestFileMarkupParser.GetSpans(markup, out string source, out ImmutableDictionary<string, ImmutableArray<TextSpan>> spans);
        var id = Assert.Single(spans.Keys, key => key.StartsWith("PEFT", StringComparison.Ordinal));
        var analyzer = new ConstructedDiagnostics(source, spans[id], constructed);
        Assert.Contains(id, analyzer.SupportedDiagnostics.Select(d => d.Id));
        return new PeftCodeFixTest<TCodeFix>([analyzer], markup, fixedCode, title).RunAsync();
    }

    protected override IEnumerable<DiagnosticAnalyzer> GetDiagnosticAnalyzers() => _analyzers;

    protected override CompilationOptions CreateCompilationOptions() =>
        ((CSharpCompilationOptions)base.CreateCompilationOptions()).WithNullableContextOptions(NullableContextOptions.Enable);

    protected override ParseOptions CreateParseOptions() =>
        ((CSharpParseOptions)base.CreateParseOptions()).WithLanguageVersion(LanguageVersion.Latest);

    protected override ImmutableArray<CodeAction> FilterCodeActions(ImmutableArray<CodeAction> actions)
    {
        var filtered = base.FilterCodeActions(actions);
        Verify.True(filtered.Length <= 1, $"Expected at most one code action for a diagnostic, found: {string.Join(", ", filtered.Select(a => a.Title))}");
        return filtered;
    }

    /// <summary>
    /// Reports the diagnostics a test constructs, as an IDE hands a fix those of its error list. It reports them in the
    /// original text only, so a fixed document has none. The test hands it to the test run; no compiler loads it.
    /// </summary>
#pragma warning disable RS1001 // the attribute would mark it as a compiler extension, whose rules a test's helper need not follow
    private sealed class ConstructedDiagnostics(string source, ImmutableArray<TextSpan> spans, PeftCodeFixTest.DiagnosticFactory factory) : DiagnosticAnalyzer
#pragma warning restore RS1001
    {
        public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; } =
            [Catalog.ClassNotPartial, Catalog.ReadOnlyTarget, Catalog.UnknownTarget];

        public override void Initialize(AnalysisContext context)
        {
            context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
            context.EnableConcurrentExecution();
            context.RegisterSyntaxTreeAction(tree =>
            {
                if (tree.Tree.GetText(tree.CancellationToken).ToString() != source) return;
                foreach (var diagnostic in factory(tree.Tree, spans)) tree.ReportDiagnostic(diagnostic);
            });
        }
    }
}
