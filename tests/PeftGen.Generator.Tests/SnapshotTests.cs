using Microsoft.CodeAnalysis;
using PeftGen.Generator.Tests.TestSupport;

namespace PeftGen.Generator.Tests;

public class SnapshotTests
{
    [Theory]
    [MemberData(nameof(GeneratorCases.Names), MemberType = typeof(GeneratorCases))]
    public void GeneratedCodeMatchesSnapshot(string caseName) =>
        Snapshot.Match(caseName, GeneratorHarness.GeneratedText(GeneratorCases.All[caseName]));

    [Theory]
    [MemberData(nameof(GeneratorCases.Names), MemberType = typeof(GeneratorCases))]
    public void GeneratedCodeCompilesWithoutWarnings(string caseName)
    {
        var (output, _) = GeneratorHarness.Run(GeneratorCases.All[caseName]);
        using var stream = new MemoryStream();
        var emitted = output.Emit(stream);
        var problems = emitted.Diagnostics.Where(d => d.Severity >= DiagnosticSeverity.Warning).ToList();
        Assert.True(problems.Count == 0, string.Join("\n", problems));
        Assert.True(emitted.Success);
    }

    [Fact]
    public void HintNameIsNamespaceAndTypePath()
    {
        var (_, result) = GeneratorHarness.Run(GeneratorCases.TwoNamedAdapters);
        Assert.Equal("Demo.Models.Zoo.Assistant.g.cs", Assert.Single(result.GeneratedTrees).FilePath.Split('/', '\\')[^1]);
    }

    [Fact]
    public void ClassThatIsNotPartialGetsNothing()
    {
        var (_, result) = GeneratorHarness.Run(new GeneratorCase(
            """
            [PeftGen.LoRA(rank: 8, targets: "q_proj")]
            internal class Plain : PeftGen.Nn.Module { }
            """));
        Assert.Empty(result.GeneratedTrees);
    }

    [Fact]
    public void AttributesOnTwoPartialDeclarationsGenerateOneFile()
    {
        var (output, result) = GeneratorHarness.Run(new GeneratorCase(
            """
            [PeftGen.LoRA(rank: 2, targets: "a")]
            internal partial class Split : PeftGen.Nn.Module { private PeftGen.Nn.Linear a = new(4, 4); }
            """,
            """
            [PeftGen.LoRA(rank: 2, targets: "a", Name = "second")]
            internal partial class Split { }
            """));
        Assert.Single(result.GeneratedTrees);
        Assert.Contains("SecondLoRAConfig", result.GeneratedTrees[0].ToString());
        Assert.DoesNotContain(output.GetDiagnostics(), d => d.Severity == DiagnosticSeverity.Error);
    }
}
