using System.Collections.Generic;
using System.Linq;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using PeftGen.Generator.Parsing;

namespace PeftGen.Analyzers;

/// <summary>
/// Every child module reachable from a model class, linear or not, with the member that holds it. Paths follow the
/// generator's <see cref="ModuleGraphWalker"/> (same names, "{i}" for list indices, base members first), so targets
/// match here exactly as they match the generator's layers. <see cref="IsComplete"/> says whether the members are the
/// whole tree: only then can a target that matches nothing be reported as an error.
/// </summary>
internal sealed class ModuleTree
{
    private readonly KnownSymbols _known;
    private readonly CancellationToken _cancellationToken;
    private readonly HashSet<ITypeSymbol> _onPath = new(SymbolEqualityComparer.Default);
    private readonly List<ModuleNode> _nodes = new();

    private ModuleTree(KnownSymbols known, CancellationToken cancellationToken)
    {
        _known = known;
        _cancellationToken = cancellationToken;
    }

    public IReadOnlyList<ModuleNode> Nodes => _nodes;

    /// <summary>
    /// False when modules may exist that no member shows: a member typed as an abstract module, a
    /// <c>ModuleDict</c>, a list of linear layers, or a <c>RegisterModule</c> call under a name no member carries.
    /// </summary>
    public bool IsComplete { get; private set; } = true;

    public IEnumerable<ModuleNode> Linears => _nodes.Where(n => n.IsLinear);

    public static ModuleTree Walk(INamedTypeSymbol root, KnownSymbols known, CancellationToken cancellationToken)
    {
        var tree = new ModuleTree(known, cancellationToken);
        tree.WalkType(root, "");
        return tree;
    }

    private void WalkType(INamedTypeSymbol type, string prefix)
    {
        if (!_onPath.Add(type.OriginalDefinition)) return;
        var names = new HashSet<string>();
        var chain = new List<INamedTypeSymbol>();
        for (var t = type; t != null && !KnownSymbols.Is(t, _known.Module); t = t.BaseType)
            chain.Insert(0, t);
        foreach (var declaring in chain)
        {
            foreach (var member in declaring.GetMembers())
            {
                _cancellationToken.ThrowIfCancellationRequested();
                if (ChildType(member) is not { } childType) continue;
                string name = ModuleName(member) ?? member.Name;
                if (!names.Add(name)) continue;
                string path = prefix.Length == 0 ? name : prefix + "." + name;
                bool isLinear = KnownSymbols.DerivesFrom(childType, _known.LinearBase);
                _nodes.Add(new ModuleNode(path, member, childType, isLinear));
                if (isLinear) continue;
                if (KnownSymbols.Is(childType, _known.ModuleList) && childType.TypeArguments[0] is INamedTypeSymbol element)
                {
                    // The walker treats list elements as containers; a list of linear layers holds layers it does not see.
                    if (KnownSymbols.DerivesFrom(element, _known.LinearBase) || element.IsAbstract) IsComplete = false;
                    WalkType(element, path + ".{i}");
                }
                else if (childType.IsAbstract || childType.OriginalDefinition.ToDisplayString() == "PeftGen.Nn.ModuleDict<T>")
                    IsComplete = false;
                else
                    WalkType(childType, path);
            }
        }
        foreach (var declaring in chain)
            if (RegistersUnnamedChildren(declaring, names)) IsComplete = false;
        _onPath.Remove(type.OriginalDefinition);
    }

    private INamedTypeSymbol? ChildType(ISymbol member)
    {
        var type = member switch
        {
            IFieldSymbol { IsStatic: false, IsImplicitlyDeclared: false, AssociatedSymbol: null } f => f.Type,
            IPropertySymbol { IsStatic: false, IsIndexer: false } p => p.Type,
            _ => null,
        };
        // Adapter slots are empty in the base model: not part of its shape, never targets.
        return type is INamedTypeSymbol named && KnownSymbols.DerivesFrom(named, _known.Module) && !_known.IsAdapterSlot(member) ? named : null;
    }

    private string? ModuleName(ISymbol member) =>
        member.GetAttributes().FirstOrDefault(a => KnownSymbols.Is(a.AttributeClass, _known.ModuleName)) is { ConstructorArguments.Length: 1 } attribute
            ? attribute.ConstructorArguments[0].Value as string
            : null;

    /// <summary>True when source of <paramref name="type"/> registers a child under a name that is not a constant member name.</summary>
    private bool RegistersUnnamedChildren(INamedTypeSymbol type, HashSet<string> names)
    {
        foreach (var reference in type.DeclaringSyntaxReferences)
        {
            var declaration = reference.GetSyntax(_cancellationToken);
            SemanticModel? model = null;
            foreach (var invocation in declaration.DescendantNodes().OfType<InvocationExpressionSyntax>())
            {
                string? called = invocation.Expression switch
                {
                    IdentifierNameSyntax id => id.Identifier.ValueText,
                    GenericNameSyntax generic => generic.Identifier.ValueText,
                    MemberAccessExpressionSyntax access => access.Name.Identifier.ValueText,
                    _ => null,
                };
                if (called != "RegisterModule") continue;
                model ??= _known.Compilation.GetSemanticModel(declaration.SyntaxTree);
                if (model.GetSymbolInfo(invocation, _cancellationToken).Symbol is not IMethodSymbol method
                    || !KnownSymbols.Is(method.ContainingType, _known.Module)) continue;
                var nameArgument = invocation.ArgumentList.Arguments.FirstOrDefault(a => a.NameColon?.Name.Identifier.ValueText == "name")
                    ?? invocation.ArgumentList.Arguments.FirstOrDefault(a => a.NameColon == null);
                if (nameArgument == null || model.GetConstantValue(nameArgument.Expression, _cancellationToken).Value is not string name || !names.Contains(name))
                    return true;
            }
        }
        return false;
    }
}

/// <summary>A child module: its path template, the member holding it, and the member's module type.</summary>
internal sealed record ModuleNode(string Path, ISymbol Member, INamedTypeSymbol Type, bool IsLinear);
