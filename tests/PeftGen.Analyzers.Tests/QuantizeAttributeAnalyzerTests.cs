using PeftGen.Analyzers.Tests.TestSupport;

namespace PeftGen.Analyzers.Tests;

public sealed class QuantizeAttributeAnalyzerTests
{
    [Theory]
    [InlineData("100")]
    [InlineData("16")]
    [InlineData("8192")]
    public Task PEFT009_on_a_block_size_QLoRA_does_not_support(string blockSize) =>
        AnalyzerVerifier.VerifyAsync(Sources.Llama($$"""
            [LoRA(rank: 8, targets: "all-linear")]
            [Quantize(QuantType.NF4, BlockSize = {|PEFT009:{{blockSize}}|})]
            """));

    [Theory]
    [InlineData("32")]
    [InlineData("4096")]
    public Task No_PEFT009_for_powers_of_two_from_32_to_4096(string blockSize) =>
        AnalyzerVerifier.VerifyAsync(Sources.Llama($$"""
            [LoRA(rank: 8, targets: "all-linear")]
            [Quantize(QuantType.NF4, BlockSize = {{blockSize}})]
            """));

    [Fact]
    public async Task PEFT010_on_a_block_size_that_does_not_divide_a_quantized_layer()
    {
        var diagnostics = await AnalyzerVerifier.VerifyAsync(Sources.Attention("""
            [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
            [Quantize(QuantType.NF4, BlockSize = {|PEFT010:1024|})]
            """));
        Assert.Contains("the 512 weights of 'v_proj'", Assert.Single(diagnostics).GetMessage());
    }

    [Fact]
    public Task PEFT010_with_shapes_from_the_model_config() =>
        AnalyzerVerifier.VerifyAsync(
            Sources.Llama("""
                [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
                [Quantize(QuantType.NF4, BlockSize = {|PEFT010:512|})]
                [ModelConfig("config.json")]
                """),
            ("/repo/config.json", Sources.TinyConfig));

    [Fact]
    public Task PEFT010_on_the_attribute_for_the_default_block_size() =>
        AnalyzerVerifier.VerifyAsync("""
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
        AnalyzerVerifier.VerifyAsync(
            Sources.Llama($$"""
                [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
                [Quantize(QuantType.NF4, BlockSize = {{blockSize}})]
                [ModelConfig("config.json")]
                """),
            ("/repo/config.json", Sources.TinyConfig));
}
