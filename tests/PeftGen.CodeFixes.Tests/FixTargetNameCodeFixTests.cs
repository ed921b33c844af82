using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using PeftGen.CodeFixes.Tests.TestSupport;
using Xunit;

namespace PeftGen.CodeFixes.Tests;

public sealed class FixTargetNameCodeFixTests
{
    /// <summary>Attention with the four usual projections, for sources whose [LoRA] line is what varies.</summary>
    private static string Model(string attribute) => $$"""
        using PeftGen;
        using PeftGen.Nn;

        namespace Demo;

        {{attribute}}
        internal partial class StoryTeller : Module
        {
            private LinearBase q_proj = new Linear(16, 16);
            private LinearBase k_proj = new Linear(16, 8);
            private LinearBase v_proj = new Linear(16, 8);
            private LinearBase o_proj = new Linear(16, 16);
        }
        """;

    /// <summary>
    /// PEFT006 on the marked targets literal, one per misspelling, each with its suggestion; like the analyzer, the
    /// misspelled name travels in the message, and in the "Target" property too when <paramref name="withTargetProperty"/>.
    /// </summary>
    private static PeftCodeFixTest.DiagnosticFactory Unknown(bool withTargetProperty, params (string Target, string? Suggestion)[] misspellings) =>
        Unknown("LoRA", withTargetProperty, misspellings);

    /// <summary>As above, for the targets of <paramref name="method"/> ("LoRA", "VeRA", "IA3"), which the message names first.</summary>
    private static PeftCodeFixTest.DiagnosticFactory Unknown(string method, bool withTargetProperty, params (string Target, string? Suggestion)[] misspellings) =>
        (tree, spans) => misspellings.Select(misspelling =>
        {
            var properties = ImmutableDictionary<string, string?>.Empty;
            if (misspelling.Suggestion != null)
                properties = properties.Add(Catalog.SuggestionProperty, misspelling.Suggestion);
            if (withTargetProperty)
                properties = properties.Add(FixTargetNameCodeFix.TargetProperty, misspelling.Target);
            var hint = misspelling.Suggestion == null ? "" : $" Did you mean '{misspelling.Suggestion}'?";
            return Diagnostic.Create(Catalog.UnknownTarget, Location.Create(tree, spans.Single()), properties,
                method, misspelling.Target, "StoryTeller", hint);
        });

    private static PeftCodeFixTest.DiagnosticFactory Unknown(params (string Target, string? Suggestion)[] misspellings) =>
        Unknown(withTargetProperty: false, misspellings);

    [Theory]
    [InlineData("q_prj,v_proj", "q_prj", "q_proj", "q_proj,v_proj")]
    [InlineData("q_proj,k_prj,v_proj", "k_prj", "k_proj", "q_proj,k_proj,v_proj")]
    [InlineData("q_proj,v_prj", "v_prj", "v_proj", "q_proj,v_proj")]
    [InlineData("q_proj, v_prj, o_proj", "v_prj", "v_proj", "q_proj, v_proj, o_proj")]
    [InlineData("q_proj , o_prj ", "o_prj", "o_proj", "q_proj , o_proj ")]
    public Task MisspelledEntryIsReplacedInPlace(string targets, string misspelled, string suggestion, string fixedTargets) =>
        // The analyzer reports PEFT006 on the misspelt entry inside the literal.
        PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(
            Model($"[LoRA(rank: 8, targets: \"{targets.Replace(misspelled, "{|PEFT006:" + misspelled + "|}")}\")]"),
            Model($"[LoRA(rank: 8, targets: \"{fixedTargets}\")]"),
            title: $"Change target '{misspelled}' to '{suggestion}'");

    [Fact]
    public Task PositionalTargetsAreFixed() =>
        PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(
            Model("""[LoRA(8, 16, "q_proj,{|PEFT006:v_prj|}", Dropout = 0.05)]"""),
            Model("""[LoRA(8, 16, "q_proj,v_proj", Dropout = 0.05)]"""));

    [Fact]
    public Task NamedTargetsAmongOtherArgumentsAreFixed() =>
        PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(
            Model("""[LoRA(rank: 16, alpha: 32, targets: "q_proj, {|PEFT006:k_prj|}", Name = "attention", UseRsLoRA = true)]"""),
            Model("""[LoRA(rank: 16, alpha: 32, targets: "q_proj, k_proj", Name = "attention", UseRsLoRA = true)]"""));

    [Fact]
    public Task DiagnosticOnAnEntryFixesThatEntry() =>
        // The analyzer may point at the entry rather than the literal; with a name listed twice, only that one changes.
        PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(
            Model("""[LoRA(rank: 8, targets: "q_prj,v_proj,{|PEFT006:q_prj|}")]"""), Unknown(("q_prj", "q_proj")),
            Model("""[LoRA(rank: 8, targets: "q_prj,v_proj,q_proj")]"""));

    [Fact]
    public Task TargetPropertyIsUsedWhenPresent() =>
        PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(
            Model("""[LoRA(rank: 8, targets: {|PEFT006:"q_proj,v_prj"|})]"""), Unknown(withTargetProperty: true, ("v_prj", "v_proj")),
            Model("""[LoRA(rank: 8, targets: "q_proj,v_proj")]"""),
            title: "Change target 'v_prj' to 'v_proj'");

    [Fact]
    public Task NoFixWithoutSuggestion()
    {
        // The fixed code is the source: the fix must offer no action.
        var source = Model("""[LoRA(rank: 8, targets: {|PEFT006:"q_proj,attention"|})]""");
        return PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(source, Unknown(("attention", null)), source);
    }

    [Fact]
    public Task FixAllReplacesEveryMisspellingOfOneList() =>
        // Each fix edits only its own name, so the batch fixer can merge two fixes to the same literal.
        PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(
            Model("""[LoRA(rank: 8, targets: "{|PEFT006:q_prj|}, k_proj, {|PEFT006:v_prj|}")]"""),
            Model("""[LoRA(rank: 8, targets: "q_proj, k_proj, v_proj")]"""),
            equivalenceKey: FixTargetNameCodeFix.EquivalenceKey);

    [Fact]
    public Task MisspelledVeRATargetIsFixed() =>
        // The analyzer reports it with "VeRA target 'v_prj' …"; the fix reads the target, not the method, from the message.
        PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(
            Model("""[VeRA(rank: 16, targets: "q_proj, {|PEFT006:v_prj|}, o_proj")]"""),
            Model("""[VeRA(rank: 16, targets: "q_proj, v_proj, o_proj")]"""),
            title: "Change target 'v_prj' to 'v_proj'");

    [Fact]
    public Task MisspelledIA3TargetIsFixedWithoutTheTargetProperty() =>
        // Without the Target property the fix takes the first quoted name of the message, which follows the method's name.
        PeftCodeFixTest<FixTargetNameCodeFix>.VerifyAsync(
            Model("""[IA3("k_proj,{|PEFT006:v_prj|},o_proj", FeedForward = "o_proj")]"""), Unknown("IA3", false, ("v_prj", "v_proj")),
            Model("""[IA3("k_proj,v_proj,o_proj", FeedForward = "o_proj")]"""),
            title: "Change target 'v_prj' to 'v_proj'");
}
