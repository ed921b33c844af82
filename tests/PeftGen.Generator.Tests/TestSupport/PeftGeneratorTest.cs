using System.Collections.Immutable;
using System.Text;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Testing;
using Microsoft.CodeAnalysis.Testing;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Testing;

namespace PeftGen.Generator.Tests.TestSupport;

/// <summary>
/// A source-generator test of the Roslyn testing packages for <see cref="PeftGenerator"/>, on a consumer compiled as a
/// package consumer's is (net10.0, PeftGen.Runtime, nullable enabled, XML documentation diagnosed, the latest C# this
/// Roslyn knows). The generator must report no diagnostic and the compilation with its files must have no error (no
/// warning either, with <see cref="CompilerDiagnostics.Warnings"/>); the files it generates are compared one by one with
/// those given to <see cref="ExpectGenerated"/>. The compilation is kept, for tests that load and run the generated code.
/// </summary>
internal sealed class PeftGeneratorTest : CSharpSourceGeneratorTest<PeftGenerator, DefaultVerifier>
{
    private Compilation? _output;

    public PeftGeneratorTest(GeneratorCase testCase)
    {
        ConsumerReferences.AddTo(this);
        foreach (var source in testCase.Sources) TestState.Sources.Add(source);
        foreach (var file in testCase.AdditionalFiles) TestState.AdditionalFiles.Add(file);
    }

    /// <summary>The consumer's compilation with the generated files, once the test has run.</summary>
    public Compilation Output => _output ?? throw new InvalidOperationException("The test has not run.");

    /// <summary>The files the generator added.</summary>
    public ImmutableArray<SyntaxTree> GeneratedTrees =>
        Output.SyntaxTrees.Where(tree => tree.FilePath.Contains(typeof(PeftGenerator).FullName!, StringComparison.Ordinal)).ToImmutableArray();

    /// <summary>The text of every generated file, for tests that look for a member in it.</summary>
    public string GeneratedText => string.Concat(GeneratedTrees.Select(tree => tree.ToString()));

    /// <summary>Expects the generator to add <paramref name="text"/> as <paramref name="hintName"/>.</summary>
    public void ExpectGenerated(string hintName, string text) =>
        TestState.GeneratedSources.Add((typeof(PeftGenerator), hintName, SourceText.From(text, Encoding.UTF8)));

    /// <summary>
    /// Runs the generator on <paramref name="testCase"/> without comparing its files, checking that it reports nothing and
    /// that the consumer compiles (without warnings when <paramref name="noWarnings"/>).
    /// </summary>
    public static async Task<PeftGeneratorTest> RunAsync(GeneratorCase testCase, bool noWarnings)
    {
        var test = new PeftGeneratorTest(testCase)
        {
            TestBehaviors = TestBehaviors.SkipGeneratedSourcesCheck,
            CompilerDiagnostics = noWarnings ? CompilerDiagnostics.Warnings : CompilerDiagnostics.Errors,
        };
        await test.RunAsync();
        return test;
    }

    /// <summary><see cref="RunAsync(GeneratorCase, bool)"/>, then the consumer assembly, emitted.</summary>
    public static async Task<byte[]> EmitAsync(GeneratorCase testCase)
    {
        var output = (await RunAsync(testCase, noWarnings: false)).Output;
        using var stream = new MemoryStream();
        var emitted = output.Emit(stream);
        Assert.True(emitted.Success, string.Join("\n", emitted.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error)));
        return stream.ToArray();
    }

    protected override CompilationOptions CreateCompilationOptions() =>
        ((CSharpCompilationOptions)base.CreateCompilationOptions()).WithNullableContextOptions(NullableContextOptions.Enable);

    protected override ParseOptions CreateParseOptions() =>
        new CSharpParseOptions(LanguageVersion.Latest, DocumentationMode.Diagnose);

    protected override async Task<(Compilation compilation, ImmutableArray<Diagnostic> generatorDiagnostics)> GetProjectCompilationAsync(
        Project project, IVerifier verifier, CancellationToken cancellationToken)
    {
        var result = await base.GetProjectCompilationAsync(project, verifier, cancellationToken);
        _output ??= result.compilation;
        return result;
    }
}
