using Microsoft.CodeAnalysis;
using PeftGen.Analyzers.Tests.TestSupport;

namespace PeftGen.Analyzers.Tests;

public sealed class LoRAAttributeAnalyzerTests
{
    [Theory]
    [InlineData("""[LoRA(rank: {|PEFT002:0|}, targets: "q_proj")]""")]
    [InlineData("""[LoRA({|PEFT002:-4|}, 8, "q_proj")]""")]
    public Task PEFT002_on_a_rank_below_1(string attributes) =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention(attributes));

    [Fact]
    public Task PEFT004_on_an_alpha_that_is_not_positive() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(8, {|PEFT004:0|}, "q_proj")]"""));

    [Theory]
    [InlineData("""[LoRA(rank: 8, targets: "q_proj", Dropout = {|PEFT005:1.0|})]""")]
    [InlineData("""[LoRA(rank: 8, targets: "q_proj", Dropout = {|PEFT005:-0.1|})]""")]
    public Task PEFT005_on_a_dropout_outside_0_to_1(string attributes) =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention(attributes));

    [Fact]
    public Task No_value_diagnostics_for_usual_values() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 8, alpha: 16, targets: "q_proj,v_proj", Dropout = 0.05)]"""));

    [Fact]
    public Task PEFT003_on_the_rank_when_it_exceeds_a_planned_layer() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: {|PEFT003:32|}, alpha: 64, targets: "q_proj,v_proj")]"""));

    [Fact]
    public async Task PEFT003_names_the_narrowest_layer()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: {|PEFT003:40|}, alpha: 80, targets: "q_proj,v_proj")]"""));
        Assert.Contains("'v_proj' (weight [16, 32])", Assert.Single(diagnostics).GetMessage());
    }

    [Fact]
    public Task PEFT003_on_the_override_that_sets_the_rank() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention(
            """[LoRA(rank: 8, alpha: 16, targets: "q_proj,v_proj")]""",
            "[LoRAOverride(Rank = {|PEFT003:24|})]"));

    [Fact]
    public Task PEFT003_with_shapes_from_the_model_config() =>
        PeftAnalyzerTest.VerifyAsync(
            Sources.Llama("""
                [LoRA(rank: {|PEFT003:48|}, alpha: 96, targets: "k_proj")]
                [ModelConfig("config.json")]
                """),
            ("/repo/config.json", Sources.TinyConfig));

    [Fact]
    public Task No_PEFT003_within_every_layer() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 16, alpha: 32, targets: "q_proj,v_proj")]"""));

    [Fact]
    public Task No_PEFT003_when_shapes_are_only_known_at_run_time() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""[LoRA(rank: 48, alpha: 96, targets: "k_proj")]"""));

    [Fact]
    public async Task PEFT006_on_the_misspelt_entry_with_a_suggestion()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 8, targets: "q_proj, {|PEFT006:v_prj|}")]"""));
        var diagnostic = Assert.Single(diagnostics);
        Assert.Equal("v_proj", diagnostic.Properties[DiagnosticCatalog.SuggestionProperty]);
        Assert.Equal("v_prj", diagnostic.Properties[DiagnosticCatalog.TargetProperty]);
        Assert.Equal("LoRA target 'v_prj' matches no linear layer of 'Attention'. Did you mean 'v_proj'? Linear layers here: q_proj, v_proj.", diagnostic.GetMessage());
    }

    [Fact]
    public async Task PEFT006_in_a_library_model_and_a_verbatim_literal()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Sources.Llama("""[LoRA(rank: 8, targets: @"{|PEFT006:q_prj|},v_proj")]"""));
        Assert.Equal("q_proj", Assert.Single(diagnostics).Properties[DiagnosticCatalog.SuggestionProperty]);
    }

    [Fact]
    public async Task PEFT006_without_a_suggestion_when_nothing_is_close()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 8, targets: "q_proj,{|PEFT006:lm_head|}")]"""));
        Assert.False(Assert.Single(diagnostics).Properties.ContainsKey(DiagnosticCatalog.SuggestionProperty));
    }

    [Fact]
    public async Task PEFT006_on_the_whole_literal_when_it_has_escapes()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 8, targets: {|PEFT006:"q_proj,\u0076_prj"|})]"""));
        var properties = Assert.Single(diagnostics).Properties;
        Assert.Equal("v_prj", properties[DiagnosticCatalog.TargetProperty]);
        Assert.Equal("v_proj", properties[DiagnosticCatalog.SuggestionProperty]);
    }

    [Fact]
    public Task PEFT006_on_an_empty_target_list() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 8, targets: {|PEFT006:" , "|})]"""));

    [Fact]
    public Task No_PEFT006_for_suffixes_paths_and_indices() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""[LoRA(rank: 8, targets: "self_attn.q_proj,model.layers.1.mlp.up_proj,lm_head")]"""));

    [Fact]
    public Task No_PEFT006_when_the_model_registers_modules_no_member_shows() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention(
            """[LoRA(rank: 8, targets: "q_proj,k_proj")]""",
            """
            public void AddKey(string name) => RegisterModule(name, new Linear(32, 32));

            """));

    [Fact]
    public Task PEFT007_on_an_entry_that_names_a_module_that_is_not_linear() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama("""[LoRA(rank: 8, targets: "q_proj,{|PEFT007:embed_tokens|},{|PEFT007:mlp|}")]"""));

    [Fact]
    public Task PEFT017_on_an_invalid_regex() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 8, targets: {|PEFT017:"(q|v_proj"|})]"""));

    [Fact]
    public Task No_PEFT017_for_a_valid_regex() =>
        PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 8, targets: "(q|v)_proj")]"""));

    [Theory]
    [InlineData("""[LoRA(rank: 4, alpha: {|PEFT013:128|}, targets: "all-linear")]""")]
    [InlineData("""[LoRA(rank: {|PEFT013:128|}, targets: "all-linear")]""")]
    [InlineData("""[LoRA(rank: 4, alpha: {|PEFT013:0.5|}, targets: "all-linear")]""")]
    public Task PEFT013_on_alpha_or_rank_when_the_scaling_is_far_from_usual(string attributes) =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama(attributes));

    [Theory]
    [InlineData("""[LoRA(rank: 64, alpha: 16, targets: "all-linear")]""")]
    [InlineData("""[LoRA(rank: 1, targets: "all-linear")]""")]
    [InlineData("""[LoRA(rank: 64, alpha: 64, targets: "all-linear", UseRsLoRA = true)]""")]
    public Task No_PEFT013_for_usual_scalings(string attributes) =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama(attributes));

    [Fact]
    public async Task PEFT014_on_the_targets_of_QLoRA_on_q_and_v_only()
    {
        var diagnostics = await PeftAnalyzerTest.VerifyAsync(Sources.Llama("""
            [LoRA(rank: 8, targets: {|PEFT014:"q_proj,v_proj"|})]
            [Quantize(QuantType.NF4)]
            """));
        Assert.Equal(DiagnosticSeverity.Warning, Assert.Single(diagnostics).Severity);
    }

    [Theory]
    [InlineData("""[LoRA(rank: 8, targets: "q_proj,v_proj")]""")]
    [InlineData("""[LoRA(rank: 8, targets: "all-linear"), Quantize(QuantType.NF4)]""")]
    [InlineData("""[LoRA(rank: 8, targets: "q_proj,k_proj,v_proj,o_proj"), Quantize(QuantType.NF4)]""")]
    public Task No_PEFT014_without_QLoRA_or_with_more_targets(string attributes) =>
        PeftAnalyzerTest.VerifyAsync(Sources.Llama(attributes));
}
