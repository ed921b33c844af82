using PeftGen.Analyzers.Tests.TestSupport;

namespace PeftGen.Analyzers.Tests;

public sealed class TargetFieldAnalyzerTests
{
    private static string Fields(string attributes, string fields) => $$"""
        using PeftGen;
        using PeftGen.Nn;

        {{attributes}}
        internal partial class Block : Module
        {
        {{fields}}

            public Block()
            {
                RegisterModule("q_proj", q_proj);
                RegisterModule("k_proj", k_proj);
            }
        }
        """;

    [Fact]
    public Task PEFT008_on_the_readonly_modifier_of_a_targeted_field() =>
        PeftAnalyzerTest.VerifyAsync(Fields("""[LoRA(rank: 4, targets: "q_proj")]""", """
                private {|PEFT008:readonly|} Linear q_proj = new Linear(16, 16);
                private readonly Linear k_proj = new Linear(16, 16);
            """));

    [Fact]
    public Task PEFT008_for_all_linear_and_suffix_targets() =>
        PeftAnalyzerTest.VerifyAsync(Fields("""[LoRA(rank: 4, targets: "all-linear")]""", """
                private {|PEFT008:readonly|} LinearBase q_proj = new Linear(16, 16);
                private {|PEFT008:readonly|} Linear k_proj = new Linear(16, 16);
            """));

    [Fact]
    public Task No_PEFT008_for_writable_or_excluded_fields() =>
        PeftAnalyzerTest.VerifyAsync(Fields("""[LoRA(rank: 4, targets: "all-linear", Exclude = "k_proj")]""", """
                private Linear q_proj = new Linear(16, 16);
                private readonly Linear k_proj = new Linear(16, 16);
            """));

    [Fact]
    public Task PEFT018_on_an_override_of_a_layer_no_adapter_targets() =>
        PeftAnalyzerTest.VerifyAsync(Fields("""[LoRA(rank: 4, targets: "q_proj")]""", """
                [LoRAOverride(Rank = 2)]
                private Linear q_proj = new Linear(16, 16);
                [{|PEFT018:NoLoRA|}]
                private Linear k_proj = new Linear(16, 16);
            """));

    [Fact]
    public async Task PEFT018_on_an_override_for_an_adapter_that_does_not_exist()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Fields("""[LoRA(rank: 4, targets: "all-linear")]""", """
                [{|PEFT018:LoRAOverride(Rank = 2, Adapter = "sql")|}]
                private Linear q_proj = new Linear(16, 16);
                private Linear k_proj = new Linear(16, 16);
            """));
        Assert.Contains("'Block' has no adapter named 'sql'", Assert.Single(diagnostics).GetMessage());
    }

    [Fact]
    public Task PEFT018_on_overrides_that_change_nothing_or_hold_no_module() =>
        PeftAnalyzerTest.VerifyAsync(Fields("""[LoRA(rank: 4, targets: "all-linear")]""", """
                [{|PEFT018:LoRAOverride(Adapter = "default")|}]
                private Linear q_proj = new Linear(16, 16);
                private Linear k_proj = new Linear(16, 16);
                [{|PEFT018:NoLoRA|}]
                private int width = 16;

                public int Width => width;
            """));

    [Fact]
    public Task No_PEFT018_when_one_of_the_models_reaching_the_override_uses_it() =>
        PeftAnalyzerTest.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;

            internal sealed class Shared : Module
            {
                public Shared() => Proj = RegisterModule("proj", new Linear(16, 16));

                [ModuleName("proj"), LoRAOverride(Rank = 2)]
                public LinearBase Proj { get; private set; }
            }

            [LoRA(rank: 4, targets: "head")]
            internal partial class First : Module
            {
                public First()
                {
                    Body = RegisterModule("body", new Shared());
                    Head = RegisterModule("head", new Linear(16, 4));
                }

                [ModuleName("body")]
                public Shared Body { get; }

                [ModuleName("head")]
                public LinearBase Head { get; private set; }
            }

            [LoRA(rank: 4, targets: "proj")]
            internal partial class Second : Module
            {
                public Second() => Body = RegisterModule("body", new Shared());

                [ModuleName("body")]
                public Shared Body { get; }
            }
            """);
}
