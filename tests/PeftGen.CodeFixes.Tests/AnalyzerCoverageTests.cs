using Microsoft.CodeAnalysis.CodeFixes;
using PeftGen.CodeFixes.Tests.TestSupport;
using Xunit;

namespace PeftGen.CodeFixes.Tests;

/// <summary>
/// The fix tests take their diagnostics from the real analyzers wherever one reports the id, and construct them only
/// otherwise; this keeps an analyzer that stops reporting a fixable id from silently turning them into the latter.
/// </summary>
public sealed class AnalyzerCoverageTests
{
    public static TheoryData<CodeFixProvider> Fixes => [new MakePartialCodeFix(), new RemoveReadOnlyCodeFix(), new FixTargetNameCodeFix()];

    [Theory]
    [MemberData(nameof(Fixes))]
    public void AnAnalyzerReportsEveryFixableId(CodeFixProvider fix)
    {
        Assert.All(fix.FixableDiagnosticIds, id => Assert.True(PeftCodeFixTest.HasAnalyzerFor(id), $"No analyzer reports {id}."));
    }
}
