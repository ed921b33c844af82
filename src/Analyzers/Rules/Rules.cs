using System.Collections.Immutable;
using System.Threading;
using Microsoft.CodeAnalysis;

namespace PeftGen.Analyzers;

/// <summary>
/// Runs every rule on one class: the class's own (<see cref="ClassRules"/>), its companions' (<see cref="CompanionRules"/>)
/// and its method's (the method definition's <c>Check</c>, in <c>Methods/*.Check.cs</c>).
/// </summary>
internal static class Rules
{
    public static ImmutableArray<Diagnostic> Check(ModelAnalysis model, PeftCompilation compilation, CancellationToken cancellationToken)
    {
        var context = new CheckContext(model, compilation, cancellationToken);
        ClassRules.Check(context);
        CompanionRules.Check(context);
        if (model.Declaration.Method is { } method) method.Definition.Check(context, method);
        return context.Diagnostics;
    }
}
