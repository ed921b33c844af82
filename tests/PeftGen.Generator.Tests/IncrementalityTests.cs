using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using PeftGen.Generator.Tests.TestSupport;
using PeftGen.Testing;

namespace PeftGen.Generator.Tests;

/// <summary>
/// Second runs of one generator driver, read through its step tracking. The testing packages run the generator once per
/// test state and do not expose the driver, so these tests keep Roslyn's <see cref="CSharpGeneratorDriver"/>, on the same
/// references and options as <see cref="PeftGeneratorTest"/>.
/// </summary>
public class IncrementalityTests
{
    private static readonly CSharpParseOptions ParseOptions = new(LanguageVersion.Latest, DocumentationMode.Diagnose);

    private static readonly string[] TrackedSteps = [PeftGenerator.Steps.Models, PeftGenerator.Steps.ModelConfigs, PeftGenerator.Steps.Plans];

    [Fact]
    public void SecondRunOnTheSameCompilationIsCached()
    {
        var (driver, compilation) = FirstRun(GeneratorCases.LlamaAllOptions);
        var result = driver.RunGenerators(compilation).GetRunResult().Results[0];
        AssertNothingRegenerated(result);
    }

    [Fact]
    public void EditingAnUnrelatedFileRegeneratesNothing()
    {
        var (driver, compilation) = FirstRun(GeneratorCases.UserModuleOverrides);
        var edited = compilation.AddSyntaxTrees(CSharpSyntaxTree.ParseText("internal static class Unrelated { public const int X = 1; }", ParseOptions));
        var result = driver.RunGenerators(edited).GetRunResult().Results[0];
        AssertNothingRegenerated(result);
    }

    [Fact]
    public void ChangingTheRankRegeneratesTheModel()
    {
        var (driver, compilation) = FirstRun(GeneratorCases.UserModuleOverrides);
        var tree = compilation.SyntaxTrees.First();
        var changed = compilation.ReplaceSyntaxTree(tree, CSharpSyntaxTree.ParseText(
            tree.ToString().Replace("rank: 8, alpha: 16", "rank: 6, alpha: 16"), ParseOptions));
        var result = driver.RunGenerators(changed).GetRunResult().Results[0];
        Assert.Contains(result.TrackedSteps[PeftGenerator.Steps.Plans].SelectMany(s => s.Outputs), o => o.Reason == IncrementalStepRunReason.Modified);
        Assert.Contains("Rank = 6,", Assert.Single(result.GeneratedSources).SourceText.ToString());
    }

    private static (GeneratorDriver Driver, Compilation Compilation) FirstRun(GeneratorCase testCase)
    {
        var compilation = CSharpCompilation.Create("Consumer",
            testCase.Sources.Select((source, i) => CSharpSyntaxTree.ParseText(source, ParseOptions, path: $"Source{i}.cs")),
            ConsumerReferences.All,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));
        GeneratorDriver driver = CSharpGeneratorDriver.Create(
            [new PeftGenerator().AsSourceGenerator()],
            testCase.AdditionalFiles.Select(f => (AdditionalText)new TestAdditionalText(f.Path, f.Text)),
            ParseOptions,
            optionsProvider: null,
            new GeneratorDriverOptions(IncrementalGeneratorOutputKind.None, trackIncrementalGeneratorSteps: true));
        driver = driver.RunGenerators(compilation);
        var first = driver.GetRunResult().Results[0];
        Assert.Single(first.GeneratedSources);
        foreach (var step in TrackedSteps) Assert.True(first.TrackedSteps.ContainsKey(step), $"step {step} is not tracked");
        return (driver, compilation);
    }

    private static void AssertNothingRegenerated(GeneratorRunResult result)
    {
        foreach (var step in TrackedSteps)
        {
            foreach (var output in result.TrackedSteps[step].SelectMany(s => s.Outputs))
                Assert.True(output.Reason is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged, $"{step}: {output.Reason}");
        }
        foreach (var output in result.TrackedOutputSteps.SelectMany(s => s.Value).SelectMany(s => s.Outputs))
            Assert.True(output.Reason is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged, $"output: {output.Reason}");
    }

    private sealed class TestAdditionalText(string path, string text) : AdditionalText
    {
        public override string Path => path;

        public override Microsoft.CodeAnalysis.Text.SourceText GetText(CancellationToken cancellationToken = default) =>
            Microsoft.CodeAnalysis.Text.SourceText.From(text);
    }
}
