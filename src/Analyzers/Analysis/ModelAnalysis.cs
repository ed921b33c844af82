using System.Collections.Immutable;
using System.Threading;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>
/// A class with PeftGen attributes as the generator sees it: the <see cref="ModelReader"/>'s reading (method, companions,
/// module walk), the plan the method's planner computes from it, and every diagnostic the rules find in them, made once
/// per compilation (see <see cref="PeftCompilation"/>); each analyzer reports the diagnostics it owns.
/// </summary>
internal sealed class ModelAnalysis
{
    private ModelAnalysis(ModelDeclaration declaration, GenerationSpec? plan)
    {
        Declaration = declaration;
        Plan = plan;
    }

    public ModelDeclaration Declaration { get; }

    public INamedTypeSymbol Type => Declaration.Type;

    /// <summary>The generator's plan of a module class with a method, else null; rows are null where a shape or count is only known at run time.</summary>
    public GenerationSpec? Plan { get; }

    /// <summary>The module walk with every child module, or null for a class that is not a module.</summary>
    public ModuleWalker? Tree => Declaration.Walk;

    /// <summary>The diagnostics of the class, its attributes and its members' overrides, in no particular order.</summary>
    public ImmutableArray<Diagnostic> Diagnostics { get; private set; }

    /// <summary>The analysis of a class with PeftGen attributes, or null for any other type.</summary>
    public static ModelAnalysis? Create(INamedTypeSymbol type, PeftCompilation peft, CancellationToken cancellationToken)
    {
        if (ModelReader.Read(type, peft.Known, cancellationToken) is not { } declaration) return null;
        var plan = declaration is { IsModule: true, Method: not null }
            ? ModelPlanner.Plan(declaration.ToSpec(), peft.Configs(cancellationToken))
            : null;
        var analysis = new ModelAnalysis(declaration, plan);
        analysis.Diagnostics = Rules.Check(analysis, peft, cancellationToken);
        return analysis;
    }
}
