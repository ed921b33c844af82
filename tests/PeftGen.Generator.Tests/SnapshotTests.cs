using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Testing;
using PeftGen.Generator.Tests.TestSupport;
using PeftGen.Testing;

namespace PeftGen.Generator.Tests;

public class SnapshotTests
{
    /// <summary>
    /// Each case's generated file, by name and text, is its snapshot, and the consumer compiles with it without a warning
    /// (the generated members of public models have XML docs).
    /// </summary>
    [Theory]
    [MemberData(nameof(GeneratorCases.Names), MemberType = typeof(GeneratorCases))]
    public async Task GeneratedCodeMatchesSnapshotAndCompilesWithoutWarnings(string caseName)
    {
        var testCase = GeneratorCases.All[caseName];
        var test = new PeftGeneratorTest(testCase) { CompilerDiagnostics = CompilerDiagnostics.Warnings };
        string? verified = Snapshot.Read(caseName);
        if (verified is null || Snapshot.Accepting)
            test.TestBehaviors |= TestBehaviors.SkipGeneratedSourcesCheck;
        else
            test.ExpectGenerated(testCase.HintName!, verified);

        await test.RunAsync();

        if (Snapshot.Accepting)
            Snapshot.Write(caseName, Assert.Single(test.GeneratedTrees).ToString());
        else if (verified is null)
            Assert.Fail($"No snapshot at {Snapshot.PathOf(caseName)}. Review the generated text below, then run the tests with {Snapshot.AcceptVariable}=1 to accept it.\n\n{test.GeneratedText}");
    }

    /// <summary>
    /// What a consumer with the package's implicit usings writes, <c>[Quantize(NF4, …)]</c> with no using of PeftGen or
    /// of the enum, generates what the long form does.
    /// </summary>
    [Fact]
    public async Task TheShortFormOfQuantizeGeneratesWhatTheLongFormDoes()
    {
        var testCase = GeneratorCases.LlamaAllOptions;
        string shortForm = testCase.Sources[0]
            .Replace("using PeftGen;\n", "")
            .Replace("using PeftGen.Quantization;\n", "")
            .Replace("[Quantize(QuantType.NF4, ", "[Quantize(NF4, ");
        Assert.Contains("[Quantize(NF4, DoubleQuant = false", shortForm);
        Assert.DoesNotContain("using PeftGen;", shortForm);

        var test = new PeftGeneratorTest(testCase with { Sources = [shortForm, ConsumerReferences.PackageGlobalUsings] })
        {
            CompilerDiagnostics = CompilerDiagnostics.Warnings,
        };
        test.ExpectGenerated(testCase.HintName!, Snapshot.Read(nameof(GeneratorCases.LlamaAllOptions))!);
        await test.RunAsync();
    }

    [Fact]
    public async Task HintNameIsNamespaceAndTypePath()
    {
        var test = await PeftGeneratorTest.RunAsync(GeneratorCases.TwoNamedAdapters, noWarnings: false);
        Assert.Equal("Demo.Models.Zoo.Assistant.g.cs", Path.GetFileName(Assert.Single(test.GeneratedTrees).FilePath));
    }

    [Fact]
    public async Task ClassThatIsNotPartialGetsNothing()
    {
        var test = await PeftGeneratorTest.RunAsync(new GeneratorCase(
            """
            [PeftGen.LoRA(rank: 8, targets: "q_proj")]
            internal class Plain : PeftGen.Nn.Module { }
            """), noWarnings: false);
        Assert.Empty(test.GeneratedTrees);
    }

    [Fact]
    public async Task AttributesOnTwoPartialDeclarationsGenerateOneFile()
    {
        // The test fails on any compiler error.
        var test = await PeftGeneratorTest.RunAsync(new GeneratorCase(
            """
            [PeftGen.LoRA(rank: 2, targets: "a")]
            internal partial class Split : PeftGen.Nn.Module { private PeftGen.Nn.Linear a = new(4, 4); }
            """,
            """
            [PeftGen.LoRA(rank: 2, targets: "a", Name = "second")]
            internal partial class Split { }
            """), noWarnings: false);
        Assert.Contains("SecondLoRAConfig", Assert.Single(test.GeneratedTrees).ToString());
        Assert.DoesNotContain(test.Output.GetDiagnostics(), d => d.Severity == DiagnosticSeverity.Error);
    }
}
