using PeftGen.Analyzers.Tests.TestSupport;

namespace PeftGen.Analyzers.Tests;

public sealed class MethodAttributeAnalyzerTests
{
    private const string Config = """
        {
          "hidden_size": 64,
          "intermediate_size": 172,
          "num_hidden_layers": 3,
          "num_attention_heads": 8,
          "num_key_value_heads": 4,
          "vocab_size": 512,
          "max_position_embeddings": 128
        }
        """;

    /// <summary>A second Llama class, to append to a <see cref="Sources.Llama"/> source.</summary>
    private static string Another(string name, string attributes) => $$"""

        {{attributes}}
        internal partial class {{name}} : LlamaForCausalLM
        {
            public {{name}}(LlamaConfig config) : base(config) { }
        }
        """;

    [Fact]
    public Task PEFT019_on_a_second_method() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear")]
            [{|PEFT019:VeRA(rank: 64, targets: "q_proj,v_proj")|}]
            """));

    [Fact]
    public Task No_PEFT019_for_several_LoRA_adapters() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear")]
            [LoRA(rank: 4, targets: "q_proj", Name = "second")]
            """));

    [Fact]
    public Task No_PEFT019_for_a_same_named_attribute_of_another_namespace() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear")]
            [Mine.VeRA]
            """) + """

            namespace Mine
            {
                [System.AttributeUsage(System.AttributeTargets.Class)]
                internal sealed class VeRAAttribute : System.Attribute { }
            }
            """);

    [Fact]
    public Task PEFT020_on_Delta_LoRA_over_a_4_bit_base() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear")]
            [{|PEFT020:DeltaLoRA(100, 2)|}]
            [Quantize(QuantType.NF4)]
            """));

    [Fact]
    public Task PEFT021_on_LoRA_FA_with_DoRA_and_a_correction_without_LoRA_FA() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear", UseDoRA = true, UseLoRAFA = {|PEFT021:true|})]
            [LoRA(rank: 8, targets: "all-linear", Name = "b", LoRAFAGradientCorrection = {|PEFT021:true|})]
            """));

    [Fact]
    public async Task PEFT021_on_Delta_LoRA_with_dropout()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear", Dropout = 0.05)]
            [{|PEFT021:DeltaLoRA|}]
            """));
        Assert.Contains("[DeltaLoRA] cannot be combined with Dropout", Assert.Single(diagnostics).GetMessage());
    }

    [Fact]
    public Task PEFT022_on_settings_out_of_range() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [VeRA(rank: {|PEFT022:0|}, targets: "q_proj", DInitial = {|PEFT022:0|}, Dropout = {|PEFT022:1|})]
            [LayerDrop({|PEFT022:1.0|})]
            [LayerwiseLearningRate({|PEFT022:0|})]
            """));

    [Theory]
    [InlineData("0")]
    [InlineData("1.5")]
    [InlineData("-0.1")]
    public Task PEFT022_on_a_sparse_fraction_outside_0_1(string fraction) =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama($$"""
            [SparseFineTuning({|PEFT022:{{fraction}}|})]
            """));

    [Fact]
    public Task PEFT022_on_Delta_LoRA_values_and_a_zero_bottleneck() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: "all-linear")]
            [DeltaLoRA({|PEFT022:-1|}, {|PEFT022:0|})]
            """) + Another("Narrow", "[Bottleneck({|PEFT022:0|})]"));

    [Fact]
    public Task PEFT023_on_a_feed_forward_layer_outside_the_targets() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [IA3("k_proj,v_proj", FeedForward = "k_proj,{|PEFT023:down_proj|}")]
            """));

    [Fact]
    public Task No_PEFT023_for_the_default_feed_forward_layer() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [IA3("k_proj,v_proj")]
            """));

    [Fact]
    public Task PEFT024_on_no_virtual_tokens_or_more_than_the_positions() =>
        PeftAnalyzerTest.VerifyAsync(
            Sources.Llama("""
                [PromptTuning({|PEFT024:128|})]
                [ModelConfig("config.json")]
                """) + Another("Prefixed", "[PrefixTuning(virtualTokens: {|PEFT024:0|})]"),
            ("/repo/config.json", Config));

    [Fact]
    public Task No_PEFT024_below_the_positions() =>
        PeftAnalyzerTest.VerifyAsync(
            Sources.Llama("""
                [PTuning(127, 32)]
                [ModelConfig("config.json")]
                """),
            ("/repo/config.json", Config));

    [Fact]
    public Task PEFT025_on_a_bottleneck_wider_than_the_model() =>
        PeftAnalyzerTest.VerifyAsync(
            Sources.Llama("""
                [Bottleneck({|PEFT025:65|})]
                [ModelConfig("config.json")]
                """),
            ("/repo/config.json", Config));

    [Fact]
    public Task PEFT025_on_a_reduction_factor_that_leaves_no_channel() =>
        PeftAnalyzerTest.VerifyAsync(
            Sources.Llama("""
                [Bottleneck(ReductionFactor = {|PEFT025:128|})]
                [ModelConfig("config.json")]
                """),
            ("/repo/config.json", Config));

    [Fact]
    public Task PEFT026_on_prompt_learning_and_layer_drop_outside_Llama() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""
            [{|PEFT026:PromptTuning(8)|}]
            [{|PEFT026:LayerDrop(0.1)|}]
            """));

    [Fact]
    public Task New_method_targets_reuse_the_target_diagnostics() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""
            [VeRA(rank: 16, targets: "q_proj,{|PEFT006:v_prj|}")]
            """));

    [Fact]
    public async Task PEFT006_names_the_method_whose_target_it_is()
    {
        var vera = Assert.Single(await PeftAnalyzerTest.VerifyAsync(Sources.Attention("""
            [VeRA(rank: 16, targets: "q_proj,{|PEFT006:v_prj|}")]
            """)));
        Assert.Equal("VeRA target 'v_prj' matches no linear layer of 'Attention'. Did you mean 'v_proj'? Linear layers here: q_proj, v_proj.", vera.GetMessage());
        Assert.Equal("v_proj", vera.Properties[DiagnosticCatalog.SuggestionProperty]);

        var ia3 = Assert.Single(await PeftAnalyzerTest.VerifyAsync(Sources.Attention("""
            [IA3("{|PEFT006:q_prj|},v_proj", FeedForward = "v_proj")]
            """)));
        Assert.Equal("IA3 target 'q_prj' matches no linear layer of 'Attention'. Did you mean 'q_proj'? Linear layers here: q_proj, v_proj.", ia3.GetMessage());
    }

    [Fact]
    public async Task PEFT017_names_sparse_fine_tuning()
    {
        var diagnostic = Assert.Single(await PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [SparseFineTuning(0.01, {|PEFT017:"mlp\\.(up"|})]
            """)));
        Assert.StartsWith("Sparse fine-tuning target regex 'mlp\\.(up' is invalid: ", diagnostic.GetMessage());
    }

    [Fact]
    public async Task PEFT011_on_a_layerwise_learning_rate_with_prompt_learning()
    {
        var diagnostic = Assert.Single(await PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [PrefixTuning(8)]
            [{|PEFT011:LayerwiseLearningRate(0.9)|}]
            """)));
        Assert.Equal("[LayerwiseLearningRate] cannot be combined with [PrefixTuning]: prompt learning trains only the virtual tokens' encoder, "
            + "which lies outside the decoder layers, so there is no depth to scale its learning rate by; remove it or change the method", diagnostic.GetMessage());
    }

    [Fact]
    public Task PEFT011_on_companions_the_method_does_not_support() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [IA3]
            [{|PEFT011:Quantize(QuantType.NF4)|}]
            [{|PEFT011:DeltaLoRA|}]
            """));

    [Fact]
    public Task Every_method_with_valid_settings_is_clean() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [VeRA(rank: 256, targets: "all-linear", DInitial = 0.1)]
            [Quantize(QuantType.NF4)]
            [LayerDrop(0.1, Schedule = PeftGen.Methods.LayerDrop.LayerDropSchedule.Linear)]
            [LayerwiseLearningRate(0.9)]
            """));
}
