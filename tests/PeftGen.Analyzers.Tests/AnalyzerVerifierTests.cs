using PeftGen.Analyzers.Tests.TestSupport;
using Xunit.Sdk;

namespace PeftGen.Analyzers.Tests;

/// <summary>The verifier fails on any difference, so a passing analyzer test means the exact diagnostics.</summary>
public sealed class AnalyzerVerifierTests
{
    [Fact]
    public Task Fails_on_an_unmarked_diagnostic() =>
        Assert.ThrowsAsync<TrueException>(() => AnalyzerVerifier.VerifyAsync(Sources.Attention("""[LoRA(rank: 0, targets: "q_proj")]""")));

    [Fact]
    public Task Fails_on_a_mark_with_no_diagnostic() =>
        Assert.ThrowsAsync<TrueException>(() => AnalyzerVerifier.VerifyAsync(Sources.Attention("""[LoRA(rank: {|PEFT002:8|}, targets: "q_proj")]""")));

    [Fact]
    public Task Fails_on_a_wrong_span() =>
        Assert.ThrowsAsync<TrueException>(() => AnalyzerVerifier.VerifyAsync(Sources.Attention("""[LoRA({|PEFT002:rank: 0|}, targets: "q_proj")]""")));

    [Fact]
    public Task Fails_on_a_wrong_id() =>
        Assert.ThrowsAsync<TrueException>(() => AnalyzerVerifier.VerifyAsync(Sources.Attention("""[LoRA(rank: {|PEFT003:0|}, targets: "q_proj")]""")));

    [Fact]
    public Task Fails_on_code_that_does_not_compile() =>
        Assert.ThrowsAsync<EmptyException>(() => AnalyzerVerifier.VerifyAsync("class C { int x = ; }"));
}
