using PeftGen.Analyzers.Tests.TestSupport;
using PeftGen.Testing;

namespace PeftGen.Analyzers.Tests;

public sealed class QuantizeAttributeAnalyzerTests
{
    [Theory]
    [InlineData("100")]
    [InlineData("16")]
    [InlineData("8192")]
    public Task PEFT009_on_a_block_size_QLoRA_does_not_support(string blockSize) =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama($$"""
            [LoRA(rank: 8, targets: "all-linear")]
            [Quantize(QuantType.NF4, BlockSize = {|PEFT009:{{blockSize}}|})]
            """));

    [Theory]
    [InlineData("32")]
    [InlineData("4096")]
    public Task No_PEFT009_for_powers_of_two_from_32_to_4096(string blockSize) =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama($$"""
            [LoRA(rank: 8, targets: "all-linear")]
            [Quantize(QuantType.NF4, BlockSize = {{blockSize}})]
            """));

    [Fact]
    public async Task PEFT010_on_a_block_size_that_does_not_divide_a_quantized_layer()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Sources.Attention("""
            [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
            [Quantize(QuantType.NF4, BlockSize = {|PEFT010:1024|})]
            """));
        Assert.Contains("the 512 weights of 'v_proj'", Assert.Single(diagnostics).GetMessage());
    }

    [Fact]
    public Task PEFT010_with_shapes_from_the_model_config() =>
        PeftAnalyzerTest.VerifyAsync(
            Sources.Llama("""
                [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
                [Quantize(QuantType.NF4, BlockSize = {|PEFT010:512|})]
                [ModelConfig("config.json")]
                """),
            ("/repo/config.json", Sources.TinyConfig));

    [Fact]
    public Task PEFT010_on_the_attribute_for_the_default_block_size() =>
        PeftAnalyzerTest.VerifyAsync("""
            using PeftGen;
            using PeftGen.Nn;
            using PeftGen.Quantization;

            [LoRA(rank: 4, targets: "all-linear")]
            [{|PEFT010:Quantize(QuantType.FP4)|}]
            internal partial class Odd : Module
            {
                public Odd() => Proj = RegisterModule("proj", new Linear(10, 10));

                [ModuleName("proj")]
                public LinearBase Proj { get; private set; }
            }
            """);

    [Theory]
    [InlineData("256")]
    [InlineData("64")]
    public Task No_PEFT010_when_the_block_size_divides_every_quantized_layer(string blockSize) =>
        PeftAnalyzerTest.VerifyAsync(
            Sources.Llama($$"""
                [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
                [Quantize(QuantType.NF4, BlockSize = {{blockSize}})]
                [ModelConfig("config.json")]
                """),
            ("/repo/config.json", Sources.TinyConfig));

    [Theory]
    [InlineData("NF4")]
    [InlineData("FP4")]
    public Task The_short_form_of_the_package_global_usings_reads_as_the_long_form(string type) =>
        // What a consumer with the package's implicit usings writes: no using of PeftGen or of the enum.
        new PeftAnalyzerTest
        {
            TestState =
            {
                Sources =
                {
                    $$"""
                    using PeftGen.Models.Llama;

                    [LoRA(rank: 8, targets: {|PEFT014:"q_proj,v_proj"|})]
                    [Quantize({{type}}, DoubleQuant = true, BlockSize = {|PEFT009:100|})]
                    internal partial class Chat : LlamaForCausalLM
                    {
                        public Chat(LlamaConfig config) : base(config) { }
                    }
                    """,
                    ConsumerReferences.PackageGlobalUsings,
                },
            },
        }.RunAsync();
}
