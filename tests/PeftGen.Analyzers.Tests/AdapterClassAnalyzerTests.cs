using PeftGen.Analyzers.Tests.TestSupport;

namespace PeftGen.Analyzers.Tests;

public sealed class AdapterClassAnalyzerTests
{
    [Fact]
    public Task PEFT001_on_the_identifier_of_a_class_that_is_not_partial() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""[LoRA(rank: 8, targets: "all-linear")]""", "class {|PEFT001:Chat|}"));

    [Fact]
    public Task PEFT001_when_a_containing_type_is_not_partial() =>
        PeftAnalyzerTest.VerifyAsync("""
            using PeftGen;
            using PeftGen.Models.Llama;

            internal static class Zoo
            {
                [LoRA(rank: 8, targets: "all-linear")]
                internal partial class {|PEFT001:Chat|} : LlamaForCausalLM
                {
                    public Chat(LlamaConfig config) : base(config) { }
                }
            }
            """);

    [Fact]
    public Task No_PEFT001_for_partial_classes_in_partial_types() =>
        PeftAnalyzerTest.VerifyAsync("""
            using PeftGen;
            using PeftGen.Models.Llama;

            internal static partial class Zoo
            {
                [LoRA(rank: 8, targets: "all-linear")]
                internal partial class Chat : LlamaForCausalLM
                {
                    public Chat(LlamaConfig config) : base(config) { }
                }
            }
            """);

    [Fact]
    public Task PEFT011_on_companion_attributes_without_LoRA() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [{|PEFT011:Quantize(QuantType.NF4)|}]
            [{|PEFT011:LoRAPlus(16)|}]
            """, "class Chat"));

    [Fact]
    public Task No_PEFT011_when_a_LoRA_is_declared() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear")]
            [Quantize(QuantType.NF4)]
            [LoRAPlus(16)]
            """));

    [Fact]
    public Task PEFT012_on_the_repeated_Name_argument() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear", Name = "chat")]
            [LoRA(rank: 4, targets: "all-linear", Name = {|PEFT012:"chat"|})]
            """));

    [Fact]
    public Task PEFT012_on_the_attribute_when_both_use_the_default_name() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear")]
            [{|PEFT012:LoRA(rank: 4, targets: "all-linear")|}]
            """));

    [Fact]
    public Task No_PEFT012_for_distinct_names() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear")]
            [LoRA(rank: 4, targets: "all-linear", Name = "sql")]
            """));
}
