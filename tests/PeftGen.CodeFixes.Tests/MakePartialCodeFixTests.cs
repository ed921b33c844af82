using PeftGen.CodeFixes.Tests.TestSupport;
using Xunit;

namespace PeftGen.CodeFixes.Tests;

public sealed class MakePartialCodeFixTests
{
    [Fact]
    public async Task TopLevelClassBecomesPartial()
    {
        await PeftCodeFixTest<MakePartialCodeFix>.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal class {|PEFT001:StoryTeller|} : Module
            {
                private LinearBase q_proj = new Linear(16, 16);
                private LinearBase v_proj = new Linear(16, 16);
            }
            """, """
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal partial class StoryTeller : Module
            {
                private LinearBase q_proj = new Linear(16, 16);
                private LinearBase v_proj = new Linear(16, 16);
            }
            """, title: "Make 'StoryTeller' partial");
    }

    [Fact]
    public async Task ContainingTypesBecomePartialToo()
    {
        await PeftCodeFixTest<MakePartialCodeFix>.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo
            {
                public static class Zoo
                {
                    internal partial class Shelf
                    {
                        [LoRA(rank: 8, targets: "q_proj,v_proj")]
                        internal sealed class {|PEFT001:StoryTeller|} : Module
                        {
                            private LinearBase q_proj = new Linear(16, 16);
                            private LinearBase v_proj = new Linear(16, 16);
                        }
                    }
                }
            }
            """, """
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
            """, title: "Make 'StoryTeller' partial");
    }

    [Fact]
    public async Task AttributesAndDocCommentsArePreserved()
    {
        // Without modifiers the doc comment (or the indentation after the attributes) sits on the 'class' keyword
        // itself, so this is where trivia could be lost or end up after 'partial'.
        await PeftCodeFixTest<MakePartialCodeFix>.VerifyAsync("""
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
                class {|PEFT001:StoryTeller|} : Module
                {
                    private LinearBase q_proj = new Linear(16, 16);
                    private LinearBase v_proj = new Linear(16, 16);
                }
            }
            """, """
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
            """);
    }

    [Fact]
    public async Task UndocumentedClassWithoutModifiersKeepsItsIndentation()
    {
        await PeftCodeFixTest<MakePartialCodeFix>.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo
            {
                class Zoo
                {
                    [LoRA(rank: 8, targets: "q_proj")] class {|PEFT001:StoryTeller|} : Module
                    {
                        private LinearBase q_proj = new Linear(16, 16);
                    }
                }
            }
            """, """
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
            """);
    }

    [Fact]
    public async Task FixAllMakesEveryReportedClassPartial()
    {
        await PeftCodeFixTest<MakePartialCodeFix>.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            [LoRA(rank: 8, targets: "q_proj,v_proj")]
            internal class {|PEFT001:StoryTeller|} : Module
            {
                private LinearBase q_proj = new Linear(16, 16);
                private LinearBase v_proj = new Linear(16, 16);
            }

            [LoRA(rank: 4, targets: "all-linear")]
            public class {|PEFT001:Poet|} : Module
            {
                private LinearBase up = new Linear(16, 64);
            }
            """, """
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
            """, equivalenceKey: MakePartialCodeFix.EquivalenceKey);
    }

    [Fact]
    public async Task FixAllMakesASharedContainingTypePartialOnce()
    {
        // Both fixes add 'partial' to Zoo; the batch fixer must merge the identical edits rather than drop one fix.
        await PeftCodeFixTest<MakePartialCodeFix>.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            namespace Demo;

            public static class Zoo
            {
                [LoRA(rank: 8, targets: "q_proj")]
                internal class {|PEFT001:StoryTeller|} : Module
                {
                    private LinearBase q_proj = new Linear(16, 16);
                }

                [LoRA(rank: 4, targets: "up")]
                internal class {|PEFT001:Poet|} : Module
                {
                    private LinearBase up = new Linear(16, 64);
                }
            }
            """, """
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
            """, equivalenceKey: MakePartialCodeFix.EquivalenceKey);
    }
}
