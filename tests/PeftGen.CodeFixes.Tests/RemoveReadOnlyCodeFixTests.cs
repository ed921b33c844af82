using Microsoft.CodeAnalysis;
using PeftGen.CodeFixes.Tests.TestSupport;
using Xunit;

namespace PeftGen.CodeFixes.Tests;

public sealed class RemoveReadOnlyCodeFixTests
{
    /// <summary>PEFT008 on each marked span, naming the field the span belongs to.</summary>
    private static PeftCodeFixTest.DiagnosticFactory ReadOnlyField(string field) => (tree, spans) =>
        spans.Select(span => Diagnostic.Create(Catalog.ReadOnlyTarget, Location.Create(tree, span), field));

    [Fact]
    public async Task SingleDeclaratorLosesReadOnly()
    {
        await PeftCodeFixTest<RemoveReadOnlyCodeFix>.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                private {|PEFT008:readonly|} LinearBase q_proj;
                private LinearBase v_proj = new Linear(Dim, Dim);

                public StoryTeller()
                {
                    q_proj = new Linear(Dim, Dim);
                }
            }
            """, """
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
            """, title: "Remove 'readonly' from 'q_proj'");
    }

    [Fact]
    public async Task FieldWithInitializerLosesReadOnly()
    {
        await PeftCodeFixTest<RemoveReadOnlyCodeFix>.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                private LinearBase q_proj = new Linear(Dim, Dim);
                private {|PEFT008:readonly|} LinearBase v_proj = new Linear(Dim, Dim); // values
            }
            """, """
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
            """, title: "Remove 'readonly' from 'v_proj'");
    }

    [Theory]
    [InlineData("private {|PEFT008:readonly|} LinearBase q_proj")]
    [InlineData("private readonly LinearBase {|PEFT008:q_proj|}")]
    public async Task EitherReportedLocationIsFixed(string declaration)
    {
        await PeftCodeFixTest<RemoveReadOnlyCodeFix>.VerifyAsync($$"""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                {{declaration}} = new Linear(Dim, Dim);
            }
            """, ReadOnlyField("q_proj"), """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj")]
            internal partial class StoryTeller : Module
            {
                public const int Dim = 16;

                private LinearBase q_proj = new Linear(Dim, Dim);
            }
            """, title: "Remove 'readonly' from 'q_proj'");
    }

    [Fact]
    public async Task LeadingReadOnlyHandsItsTriviaToTheType()
    {
        // With no access modifier, 'readonly' carries the line's indentation and the comment above it.
        await PeftCodeFixTest<RemoveReadOnlyCodeFix>.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj")]
            internal partial class StoryTeller : Module
            {
                [LoRAOverride(Rank = 4)]
                // queries
                {|PEFT008:readonly|} LinearBase q_proj = new Linear(16, 16);
            }
            """, """
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
            """);
    }
}
