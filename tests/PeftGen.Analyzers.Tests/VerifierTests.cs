using PeftGen.Analyzers.Tests.TestSupport;

namespace PeftGen.Analyzers.Tests;

/// <summary>
/// The testing packages' verifier, as <see cref="PeftAnalyzerTest"/> configures it, fails on any difference, so a passing
/// analyzer test means the exact diagnostics.
/// </summary>
public sealed class VerifierTests
{
    [Fact]
    public Task Fails_on_an_unmarked_diagnostic() =>
        Assert.ThrowsAsync<InvalidOperationException>(() => PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: 0, targets: "q_proj")]""")));

    [Fact]
    public Task Fails_on_a_mark_with_no_diagnostic() =>
        Assert.ThrowsAsync<InvalidOperationException>(() => PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: {|PEFT002:8|}, targets: "q_proj")]""")));

    [Fact]
    public Task Fails_on_a_wrong_span() =>
        Assert.ThrowsAsync<InvalidOperationException>(() => PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA({|PEFT002:rank: 0|}, targets: "q_proj")]""")));

    [Fact]
    public Task Fails_on_a_wrong_id() =>
        Assert.ThrowsAsync<InvalidOperationException>(() => PeftAnalyzerTest.VerifyAsync(Sources.Attention("""[LoRA(rank: {|PEFT003:0|}, targets: "q_proj")]""")));

    [Fact]
    public Task Fails_on_code_that_does_not_compile() =>
        Assert.ThrowsAsync<InvalidOperationException>(() => PeftAnalyzerTest.VerifyAsync("class C { int x = ; }"));
}
