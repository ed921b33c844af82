using Microsoft.CodeAnalysis;
using Xunit;

namespace PeftGen.CodeFixes.Tests;

public sealed class MakePartialCodeFixTests
{
    /// <summary>PEFT001 as the analyzer reports it: on each marked class identifier, naming the class.</summary>
    private static readonly CodeFixHarness.DiagnosticFactory NotPartial = (tree, spans) =>
        spans.Select(span => Diagnostic.Create(Catalog.ClassNotPartial, Location.Create(tree, span), tree.GetText().ToString(span)));

    [Fact]
    public async Task TopLevelClassBecomesPartial()
    {
        var result = await CodeFixHarness.FixAsync(new MakePartialCodeFix(), """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal class [|StoryTeller|] : Module
            {
                private LinearBase q_proj = new Linear(16, 16);
                private LinearBase v_proj = new Linear(16, 16);
            }
            """, NotPartial);

        Assert.Equal("Make 'StoryTeller' partial", result.Title);
        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                private LinearBase q_proj = new Linear(16, 16);
                private LinearBase v_proj = new Linear(16, 16);
            }
            """, result.Text);
    }

    [Fact]
    public async Task ContainingTypesBecomePartialToo()
    {
        var result = await CodeFixHarness.FixAsync(new MakePartialCodeFix(), """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo
            {
                public static class Zoo
                {
                    internal partial class Shelf
                    {
                        [LoRA(rank: 8, targets: "q_proj,v_proj")]
                        internal sealed class [|StoryTeller|] : Module
                        {
                            private LinearBase q_proj = new Linear(16, 16);
                            private LinearBase v_proj = new Linear(16, 16);
                        }
                    }
                }
            }
            """, NotPartial);

        Assert.Equal("Make 'StoryTeller' partial", result.Title);
        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo
            {
                public static partial class Zoo
                {
                    internal partial class Shelf
                    {
                        [LoRA(rank: 8, targets: "q_proj,v_proj")]
                        internal sealed partial class StoryTeller : Module
                        {
                            private LinearBase q_proj = new Linear(16, 16);
                            private LinearBase v_proj = new Linear(16, 16);
                        }
                    }
                }
            }
            """, result.Text);
    }

    [Fact]
    public async Task AttributesAndDocCommentsArePreserved()
    {
        // Without modifiers the doc comment (or the indentation after the attributes) sits on the 'class' keyword
        // itself, so this is where trivia could be lost or end up after 'partial'.
        var result = await CodeFixHarness.FixAsync(new MakePartialCodeFix(), """
            using PeftGen;
            using PeftGen.Nn;
            using PeftGen.Quantization;

            namespace Demo;

            /// <summary>Models of the demo.</summary>
            class Zoo
            {
                /// <summary>Writes stories.</summary>
                /// <remarks>Adapts attention only.</remarks>
                [LoRA(rank: 8, targets: "q_proj,v_proj")] // the usual pair
                [Quantize(QuantType.NF4)]
                class [|StoryTeller|] : Module
                {
                    private LinearBase q_proj = new Linear(16, 16);
                    private LinearBase v_proj = new Linear(16, 16);
                }
            }
            """, NotPartial);

        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;
            using PeftGen.Quantization;

            namespace Demo;

            /// <summary>Models of the demo.</summary>
            partial class Zoo
            {
                /// <summary>Writes stories.</summary>
                /// <remarks>Adapts attention only.</remarks>
                [LoRA(rank: 8, targets: "q_proj,v_proj")] // the usual pair
                [Quantize(QuantType.NF4)]
                partial class StoryTeller : Module
                {
                    private LinearBase q_proj = new Linear(16, 16);
                    private LinearBase v_proj = new Linear(16, 16);
                }
            }
            """, result.Text);
    }

    [Fact]
    public async Task UndocumentedClassWithoutModifiersKeepsItsIndentation()
    {
        var result = await CodeFixHarness.FixAsync(new MakePartialCodeFix(), """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo
            {
                class Zoo
                {
                    [LoRA(rank: 8, targets: "q_proj")] class [|StoryTeller|] : Module
                    {
                        private LinearBase q_proj = new Linear(16, 16);
                    }
                }
            }
            """, NotPartial);

        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo
            {
                partial class Zoo
                {
                    [LoRA(rank: 8, targets: "q_proj")] partial class StoryTeller : Module
                    {
                        private LinearBase q_proj = new Linear(16, 16);
                    }
                }
            }
            """, result.Text);
    }

    [Fact]
    public async Task FixAllMakesEveryReportedClassPartial()
    {
        var text = await CodeFixHarness.FixAllAsync(new MakePartialCodeFix(), MakePartialCodeFix.EquivalenceKey, """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal class [|StoryTeller|] : Module
            {
                private LinearBase q_proj = new Linear(16, 16);
                private LinearBase v_proj = new Linear(16, 16);
            }

            [LoRA(rank: 4, targets: "all-linear")]
            public class [|Poet|] : Module
            {
                private LinearBase up = new Linear(16, 64);
            }
            """, NotPartial);

        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                private LinearBase q_proj = new Linear(16, 16);
                private LinearBase v_proj = new Linear(16, 16);
            }

            [LoRA(rank: 4, targets: "all-linear")]
            public partial class Poet : Module
            {
                private LinearBase up = new Linear(16, 64);
            }
            """, text);
    }

    [Fact]
    public async Task FixAllMakesASharedContainingTypePartialOnce()
    {
        // Both fixes add 'partial' to Zoo; the batch fixer must merge the identical edits rather than drop one fix.
        var text = await CodeFixHarness.FixAllAsync(new MakePartialCodeFix(), MakePartialCodeFix.EquivalenceKey, """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            public static class Zoo
            {
                [LoRA(rank: 8, targets: "q_proj")]
                internal class [|StoryTeller|] : Module
                {
                    private LinearBase q_proj = new Linear(16, 16);
                }

                [LoRA(rank: 4, targets: "up")]
                internal class [|Poet|] : Module
                {
                    private LinearBase up = new Linear(16, 64);
                }
            }
            """, NotPartial);

        Assert.Equal("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            public static partial class Zoo
            {
                [LoRA(rank: 8, targets: "q_proj")]
                internal partial class StoryTeller : Module
                {
                    private LinearBase q_proj = new Linear(16, 16);
                }

                [LoRA(rank: 4, targets: "up")]
                internal partial class Poet : Module
                {
                    private LinearBase up = new Linear(16, 64);
                }
            }
            """, text);
    }
}
