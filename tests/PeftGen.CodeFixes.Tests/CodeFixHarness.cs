using System.Collections.Immutable;
using System.Reflection;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CodeActions;
using Microsoft.CodeAnalysis.CodeFixes;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.Diagnostics;
using Microsoft.CodeAnalysis.Text;
using Xunit;

namespace PeftGen.CodeFixes.Tests;

/// <summary>The title of the one action a fix offered and the document text after applying it.</summary>
internal sealed record FixResult(string Title, string Text);

/// <summary>
/// Drives code fixes the way an IDE does, on an <see cref="AdhocWorkspace"/>: a one-document project compiled against
/// the framework and PeftGen.Runtime, diagnostics from the real analyzers when one reports the id (else as the test
/// constructs them), the fix's registered action applied, and the resulting text returned for an exact comparison.
/// Sources mark the spans the test cares about with [| and |].
/// </summary>
internal static class CodeFixHarness
{
    private static readonly AdhocWorkspace Workspace = new();

    private static readonly ImmutableArray<MetadataReference> References =
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Append(typeof(LoRAAttribute).Assembly.Location)
            .Distinct(StringComparer.Ordinal)
            .Select(path => (MetadataReference)MetadataReference.CreateFromFile(path))
            .ToImmutableArray();

    /// <summary>Every analyzer in PeftGen.Analyzers, found by reflection so that new ones are picked up unasked.</summary>
    private static readonly ImmutableArray<DiagnosticAnalyzer> Analyzers =
        Catalog.AnalyzersAssembly.GetTypes()
            .Where(type => !type.IsAbstract && typeof(DiagnosticAnalyzer).IsAssignableFrom(type) && type.GetConstructor(Type.EmptyTypes) != null)
            .Select(type => (DiagnosticAnalyzer)Activator.CreateInstance(type)!)
            .ToImmutableArray();

    /// <summary>Builds the diagnostics a test expects, from the document's tree and the marked spans.</summary>
    public delegate IEnumerable<Diagnostic> DiagnosticFactory(SyntaxTree tree, ImmutableArray<TextSpan> spans);

    /// <summary>Whether some analyzer of PeftGen.Analyzers reports <paramref name="id"/>.</summary>
    public static bool HasAnalyzerFor(string id) => AnalyzersFor(id).Any();

    /// <summary>Applies the one action the fix offers for the first expected diagnostic.</summary>
    /// <param name="useAnalyzer">False where the test is about a particular location the analyzer may not choose.</param>
    public static async Task<FixResult> FixAsync(CodeFixProvider fix, string markup, DiagnosticFactory expected, bool useAnalyzer = true)
    {
        var (document, diagnostics) = await PrepareAsync(fix, markup, expected, useAnalyzer);
        var actions = await ActionsAsync(fix, document, diagnostics[0]);
        var action = Assert.Single(actions);
        return new FixResult(action.Title, await ApplyAsync(action, document));
    }

    /// <summary>The titles of the actions the fix offers for the first expected diagnostic.</summary>
    public static async Task<ImmutableArray<string>> OfferedTitlesAsync(CodeFixProvider fix, string markup, DiagnosticFactory expected)
    {
        var (document, diagnostics) = await PrepareAsync(fix, markup, expected, useAnalyzer: false);
        var actions = await ActionsAsync(fix, document, diagnostics[0]);
        return actions.Select(action => action.Title).ToImmutableArray();
    }

    /// <summary>Fixes every expected diagnostic of the document at once, through the fix's own fix-all provider.</summary>
    public static async Task<string> FixAllAsync(CodeFixProvider fix, string equivalenceKey, string markup, DiagnosticFactory expected)
    {
        var (document, diagnostics) = await PrepareAsync(fix, markup, expected, useAnalyzer: true);
        var fixAll = Assert.IsType<FixAllProvider>(fix.GetFixAllProvider(), exactMatch: false);
        var context = new FixAllContext(document, fix, FixAllScope.Document, equivalenceKey, fix.FixableDiagnosticIds,
            new KnownDiagnostics(diagnostics), CancellationToken.None);
        var action = await fixAll.GetFixAsync(context);
        Assert.NotNull(action);
        return await ApplyAsync(action, document);
    }

    private static async Task<(Document Document, ImmutableArray<Diagnostic> Diagnostics)> PrepareAsync(
        CodeFixProvider fix, string markup, DiagnosticFactory expected, bool useAnalyzer)
    {
        var (source, spans) = ParseMarkup(markup);
        var document = CreateDocument(source);
        await AssertCompilesAsync(document);

        var tree = (await document.GetSyntaxTreeAsync())!;
        var constructed = expected(tree, spans).ToImmutableArray();
        var id = Assert.Single(constructed.Select(diagnostic => diagnostic.Id).Distinct());
        Assert.Contains(id, fix.FixableDiagnosticIds);
        if (!useAnalyzer || !HasAnalyzerFor(id))
            return (document, constructed);

        var compilation = (await document.Project.GetCompilationAsync())!;
        var reported = (await compilation.WithAnalyzers(AnalyzersFor(id).ToImmutableArray()).GetAnalyzerDiagnosticsAsync())
            .Where(diagnostic => diagnostic.Id == id)
            .OrderBy(diagnostic => diagnostic.Location.SourceSpan.Start)
            .ToImmutableArray();
        Assert.Equal(constructed.Length, reported.Length);
        return (document, reported);
    }

    private static IEnumerable<DiagnosticAnalyzer> AnalyzersFor(string id) =>
        Analyzers.Where(analyzer => analyzer.SupportedDiagnostics.Any(descriptor => descriptor.Id == id));

    private static Document CreateDocument(string source)
    {
        var projectId = ProjectId.CreateNewId();
        var documentId = DocumentId.CreateNewId(projectId);
        var solution = Workspace.CurrentSolution
            .AddProject(projectId, "Models", "Models", LanguageNames.CSharp)
            .WithProjectCompilationOptions(projectId, new CSharpCompilationOptions(
                OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable))
            .WithProjectParseOptions(projectId, new CSharpParseOptions(LanguageVersion.Latest))
            .AddMetadataReferences(projectId, References)
            .AddDocument(documentId, "Models.cs", SourceText.From(source));
        return solution.GetDocument(documentId)!;
    }

    /// <summary>
    /// Test sources and fixed texts must compile, so that the analyzers see realistic code and a fix that produces
    /// invalid C# (say, 'partial' in the wrong place) fails its test.
    /// </summary>
    private static async Task AssertCompilesAsync(Document document)
    {
        var compilation = (await document.Project.GetCompilationAsync())!;
        var errors = compilation.GetDiagnostics().Where(diagnostic => diagnostic.Severity == DiagnosticSeverity.Error);
        Assert.Empty(errors);
    }

    private static async Task<List<CodeAction>> ActionsAsync(CodeFixProvider fix, Document document, Diagnostic diagnostic)
    {
        var actions = new List<CodeAction>();
        var context = new CodeFixContext(document, diagnostic, (action, _) => actions.Add(action), CancellationToken.None);
        await fix.RegisterCodeFixesAsync(context);
        return actions;
    }

    private static async Task<string> ApplyAsync(CodeAction action, Document document)
    {
        var operations = await action.GetOperationsAsync(CancellationToken.None);
        var apply = Assert.Single(operations.OfType<ApplyChangesOperation>());
        var changed = apply.ChangedSolution.GetDocument(document.Id)!;
        await AssertCompilesAsync(changed);
        return (await changed.GetTextAsync()).ToString();
    }

    private static (string Source, ImmutableArray<TextSpan> Spans) ParseMarkup(string markup)
    {
        var source = new System.Text.StringBuilder();
        var spans = ImmutableArray.CreateBuilder<TextSpan>();
        var position = 0;
        while (markup.IndexOf("[|", position, StringComparison.Ordinal) is var open and >= 0)
        {
            var close = markup.IndexOf("|]", open, StringComparison.Ordinal);
            Assert.True(close > open, "Unclosed [| in the test source.");
            source.Append(markup, position, open - position);
            var start = source.Length;
            source.Append(markup, open + 2, close - open - 2);
            spans.Add(TextSpan.FromBounds(start, source.Length));
            position = close + 2;
        }
        source.Append(markup, position, markup.Length - position);
        return (source.ToString(), spans.ToImmutable());
    }

    /// <summary>Hands fix-all exactly the diagnostics the test obtained, as an IDE hands it those of its error list.</summary>
    private sealed class KnownDiagnostics(ImmutableArray<Diagnostic> diagnostics) : FixAllContext.DiagnosticProvider
    {
        public override Task<IEnumerable<Diagnostic>> GetDocumentDiagnosticsAsync(Document document, CancellationToken cancellationToken) =>
            Task.FromResult<IEnumerable<Diagnostic>>(diagnostics);

        public override Task<IEnumerable<Diagnostic>> GetProjectDiagnosticsAsync(Project project, CancellationToken cancellationToken) =>
            Task.FromResult<IEnumerable<Diagnostic>>(ImmutableArray<Diagnostic>.Empty);

        public override Task<IEnumerable<Diagnostic>> GetAllDiagnosticsAsync(Project project, CancellationToken cancellationToken) =>
            Task.FromResult<IEnumerable<Diagnostic>>(diagnostics);
    }
}

/// <summary>
/// The analyzers' descriptors. DiagnosticCatalog is internal to PeftGen.Analyzers and open to the code fixes only, so the
/// tests read it by reflection rather than duplicating ids and message formats that the fixes depend on.
/// </summary>
internal static class Catalog
{
    public static Assembly AnalyzersAssembly { get; } = Assembly.Load("PeftGen.Analyzers");

    private static readonly Type CatalogType = AnalyzersAssembly.GetType("PeftGen.Analyzers.DiagnosticCatalog", throwOnError: true)!;

    public static DiagnosticDescriptor ClassNotPartial { get; } = Descriptor(nameof(ClassNotPartial));

    public static DiagnosticDescriptor ReadOnlyTarget { get; } = Descriptor(nameof(ReadOnlyTarget));

    public static DiagnosticDescriptor UnknownTarget { get; } = Descriptor(nameof(UnknownTarget));

    public static string SuggestionProperty { get; } = (string)Field(nameof(SuggestionProperty)).GetValue(null)!;

    private static DiagnosticDescriptor Descriptor(string name) => (DiagnosticDescriptor)Field(name).GetValue(null)!;

    private static FieldInfo Field(string name) =>
        CatalogType.GetField(name, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)
        ?? throw new InvalidOperationException($"DiagnosticCatalog has no field {name}.");
}
