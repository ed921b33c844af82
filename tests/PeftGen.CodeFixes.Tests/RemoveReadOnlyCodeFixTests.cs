using Microsoft.CodeAnalysis;
using Xunit;

namespace PeftGen.CodeFixes.Tests;

public sealed class RemoveReadOnlyCodeFixTests
{
    /// <summary>PEFT008 on each marked span, naming the field the span belongs to.</summary>
    private static CodeFixHarness.DiagnosticFactory ReadOnlyField(string field) => (tree, spans) =>
        spans.Select(span => Diagnostic.Create(Catalog.ReadOnlyTarget, Location.Create(tree, span), field));

    [Fact]
    public async Task SingleDeclaratorLosesReadOnly()
    {
        var result = await CodeFixHarness.FixAsync(new RemoveReadOnlyCodeFix(), """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                private readonly LinearBase [|q_proj|];
                private LinearBase v_proj = new Linear(Dim, Dim);

                public StoryTeller()
                {
                    q_proj = new Linear(Dim, Dim);
                }
            }
            """, ReadOnlyField("q_proj"));

        Assert.Equal("Remove 'readonly' from 'q_proj'", result.Title);
        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                private LinearBase q_proj;
                private LinearBase v_proj = new Linear(Dim, Dim);

                public StoryTeller()
                {
                    q_proj = new Linear(Dim, Dim);
                }
            }
            """, result.Text);
    }

    [Fact]
    public async Task FieldWithInitializerLosesReadOnly()
    {
        var result = await CodeFixHarness.FixAsync(new RemoveReadOnlyCodeFix(), """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                private LinearBase q_proj = new Linear(Dim, Dim);
                private readonly LinearBase [|v_proj|] = new Linear(Dim, Dim); // values
            }
            """, ReadOnlyField("v_proj"));

        Assert.Equal("Remove 'readonly' from 'v_proj'", result.Title);
        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                private LinearBase q_proj = new Linear(Dim, Dim);
                private LinearBase v_proj = new Linear(Dim, Dim); // values
            }
            """, result.Text);
    }

    [Theory]
    [InlineData("private [|readonly|] LinearBase q_proj")]
    [InlineData("private readonly LinearBase [|q_proj|]")]
    public async Task EitherReportedLocationIsFixed(string declaration)
    {
        var result = await CodeFixHarness.FixAsync(new RemoveReadOnlyCodeFix(), $$"""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                {{declaration}} = new Linear(Dim, Dim);
            }
            """, ReadOnlyField("q_proj"), useAnalyzer: false);

        Assert.Equal("Remove 'readonly' from 'q_proj'", result.Title);
        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                private LinearBase q_proj = new Linear(Dim, Dim);
            }
            """, result.Text);
    }

    [Fact]
    public async Task LeadingReadOnlyHandsItsTriviaToTheType()
    {
        // With no access modifier, 'readonly' carries the line's indentation and the comment above it.
        var result = await CodeFixHarness.FixAsync(new RemoveReadOnlyCodeFix(), """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj")]
            internal partial class StoryTeller : Module
            {
                [LoRAOverride(Rank = 4)]
                // queries
                readonly LinearBase [|q_proj|] = new Linear(16, 16);
            }
            """, ReadOnlyField("q_proj"));

        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj")]
            internal partial class StoryTeller : Module
            {
                [LoRAOverride(Rank = 4)]
                // queries
                LinearBase q_proj = new Linear(16, 16);
            }
            """, result.Text);
    }
}
