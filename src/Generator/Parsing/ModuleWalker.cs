using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Operations;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// Walks the module type graph from a model class: fields and properties whose type is a module are children (named by
/// <c>[ModuleName]</c> or the member name), <c>ModuleList&lt;T&gt;</c> children are indexed "{i}", and every
/// <c>LinearBase</c> is an adaptable layer. Base-class members come first and members keep declaration order, which
/// is the order modules register their children in. The generator reads the layers and member overrides; the analyzers
/// also ask for every child module with its member (<see cref="Nodes"/>) and whether those are the whole tree.
/// </summary>
internal sealed class ModuleWalker
{
    private readonly KnownSymbols _known;
    private readonly CancellationToken _cancellationToken;
    private readonly HashSet<ITypeSymbol> _onPath = new(SymbolEqualityComparer.Default);
    private readonly List<ModuleNode>? _nodes;
    private INamedTypeSymbol? _root;

    private ModuleWalker(KnownSymbols known, bool collectNodes, CancellationToken cancellationToken)
    {
        _known = known;
        _cancellationToken = cancellationToken;
        _nodes = collectNodes ? new List<ModuleNode>() : null;
    }

    public List<LayerSpec> Layers { get; } = new();

    public List<MemberOverrideSpec> Overrides { get; } = new();

    /// <summary>
    /// Every child module the analyzers can be sure of, linear or not, with the member that holds it (empty unless asked
    /// for): modules under a member typed as an abstract module or a <c>ModuleDict</c> are left out, as their real
    /// children are only known at run time.
    /// </summary>
    public IReadOnlyList<ModuleNode> Nodes => (IReadOnlyList<ModuleNode>?)_nodes ?? [];

    public IEnumerable<ModuleNode> Linears => Nodes.Where(n => n.IsLinear);

    /// <summary>
    /// False when modules may exist that <see cref="Nodes"/> does not show: a member typed as an abstract module, a
    /// <c>ModuleDict</c>, a list of linear layers, or a <c>RegisterModule</c> call under a name no member carries.
    /// </summary>
    public bool IsComplete { get; private set; } = true;

    /// <summary>Walks <paramref name="root"/>; <paramref name="collectNodes"/> also records the analyzers' <see cref="Nodes"/>.</summary>
    public static ModuleWalker Walk(INamedTypeSymbol root, KnownSymbols known, bool collectNodes, CancellationToken cancellationToken)
    {
        var walker = new ModuleWalker(known, collectNodes, cancellationToken) { _root = root };
        walker.WalkType(root, "", ImmutableArray<DimensionSpec>.Empty, new Reach("this", false), ImmutableArray<string>.Empty, visible: true);
        return walker;
    }

    /// <summary>A C# expression reading a module from the annotated class, and whether it may be null.</summary>
    private sealed record Reach(string Expression, bool MayBeNull)
    {
        public Reach Member(string name, bool mayBeNull) => new(Expression + (MayBeNull ? "?." : ".") + name, MayBeNull || mayBeNull);

        public Reach Element() => new(Expression + (MayBeNull ? "?[{i}]" : "[{i}]"), MayBeNull);

        public string Count() => MayBeNull ? "(" + Expression + "?.Count ?? 0)" : Expression + ".Count";
    }

    // reach: how generated code reads a module of this type (null when a member on the way is not readable from the
    // annotated class); counts: the length expression of each enclosing module list ("" when unreadable); visible: the
    // type is known to be the module's own (not reached through an abstract member or a ModuleDict).
    private void WalkType(INamedTypeSymbol type, string prefix, ImmutableArray<DimensionSpec> lists, Reach? reach, ImmutableArray<string> counts, bool visible)
    {
        // A module type that contains itself (directly or not) cannot be walked to the end; stop at the repeat.
        if (!_onPath.Add(type.OriginalDefinition)) return;
        var names = new HashSet<string>();
        var chain = BaseFirst(type);
        foreach (var declaring in chain)
        {
            foreach (var member in declaring.GetMembers())
            {
                _cancellationToken.ThrowIfCancellationRequested();
                if (ChildType(member) is not { } childType) continue;
                string name = ModuleName(member) ?? member.Name;
                if (!names.Add(name)) continue;
                string path = prefix.Length == 0 ? name : prefix + "." + name;
                ReadOverrides(member, path);
                var memberReach = reach != null && CanRead(member, type) ? reach.Member(Identifier(member.Name), MayBeNull(member)) : null;
                bool isLinear = KnownSymbols.DerivesFrom(childType, _known.LinearBase);
                if (visible) _nodes?.Add(new ModuleNode(path, member, childType, isLinear));
                if (isLinear)
                {
                    Layers.Add(Layer(member, declaring, name, path, lists) with
                    {
                        Access = memberReach?.Expression,
                        ListCountAccesses = counts.ToEquatableArray(),
                    });
                }
                else if (KnownSymbols.Is(childType, _known.ModuleList) && childType.TypeArguments[0] is INamedTypeSymbol element)
                {
                    // List elements are walked as containers; a list of linear layers holds layers no member shows.
                    if (KnownSymbols.DerivesFrom(element, _known.LinearBase) || element.IsAbstract) IsComplete = false;
                    WalkType(element, path + ".{i}", lists.Add(KnownModelShapes.ListCount(declaring, name)),
                        memberReach?.Element(), counts.Add(memberReach?.Count() ?? ""), visible);
                }
                else
                {
                    bool opaque = childType.IsAbstract || IsModuleDict(childType);
                    if (opaque) IsComplete = false;
                    WalkType(childType, path, lists, memberReach, counts, visible && !opaque);
                }
            }
        }
        if (_nodes != null && visible && chain.Any(declaring => RegistersUnnamedChildren(declaring, names))) IsComplete = false;
        _onPath.Remove(type.OriginalDefinition);
    }

    /// <summary>Whether generated code in the walked class can read <paramref name="member"/> through a <paramref name="receiver"/>.</summary>
    private bool CanRead(ISymbol member, INamedTypeSymbol receiver)
    {
        if (_root == null) return false;
        var read = member is IPropertySymbol property ? property.GetMethod : member;
        if (read == null) return false;
        // Public members of public, non-generic types need no look at the compilation (its check costs microseconds a call).
        if (IsPublic(member) && IsPublic(read)) return true;
        return _known.Compilation.IsSymbolAccessibleWithin(member, _root, receiver)
            && (ReferenceEquals(read, member) || _known.Compilation.IsSymbolAccessibleWithin(read, _root, receiver));
    }

    private static bool IsPublic(ISymbol member)
    {
        if (member.DeclaredAccessibility != Accessibility.Public) return false;
        for (var type = member.ContainingType; type != null; type = type.ContainingType)
            if (type.DeclaredAccessibility != Accessibility.Public || type.IsGenericType) return false;
        return true;
    }

    private static bool MayBeNull(ISymbol member) => member switch
    {
        IFieldSymbol f => f.NullableAnnotation == NullableAnnotation.Annotated,
        IPropertySymbol p => p.NullableAnnotation == NullableAnnotation.Annotated,
        _ => false,
    };

    private static string Identifier(string name) =>
        Microsoft.CodeAnalysis.CSharp.SyntaxFacts.GetKeywordKind(name) != Microsoft.CodeAnalysis.CSharp.SyntaxKind.None ? "@" + name : name;

    // PeftGen.Nn.ModuleDict<T>, matched name by name like the other library types.
    private static bool IsModuleDict(INamedTypeSymbol type) => type is
    {
        Name: "ModuleDict",
        Arity: 1,
        ContainingType: null,
        ContainingNamespace: { Name: "Nn", ContainingNamespace: { Name: "PeftGen", ContainingNamespace.IsGlobalNamespace: true } },
    };

    private List<INamedTypeSymbol> BaseFirst(INamedTypeSymbol type)
    {
        var chain = new List<INamedTypeSymbol>();
        for (var t = type; t != null && !KnownSymbols.Is(t, _known.Module); t = t.BaseType)
            chain.Insert(0, t);
        return chain;
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

    private void ReadOverrides(ISymbol member, string path)
    {
        foreach (var attribute in member.GetAttributes())
        {
            if (ReadOverride(_known, attribute, path) is { } spec) Overrides.Add(spec);
        }
    }

    /// <summary>The <c>[LoRAOverride]</c> or <c>[NoLoRA]</c> <paramref name="attribute"/> on the member at <paramref name="path"/>, or null for another attribute.</summary>
    public static MemberOverrideSpec? ReadOverride(KnownSymbols known, AttributeData attribute, string path)
    {
        if (KnownSymbols.Is(attribute.AttributeClass, known.NoLoRA)) return new MemberOverrideSpec(path, true, 0, 0, null);
        if (!KnownSymbols.Is(attribute.AttributeClass, known.LoRAOverride)) return null;
        var v = AttributeValues.Of(attribute);
        return new MemberOverrideSpec(path, false, v.Int("Rank"), v.Double("Alpha", 0), v.String("Adapter"));
    }

    private LayerSpec Layer(ISymbol member, INamedTypeSymbol declaring, string name, string path, ImmutableArray<DimensionSpec> lists)
    {
        if (KnownModelShapes.Linear(declaring, name) is var (inFeatures, outFeatures, presence))
            return new LayerSpec(path, lists.ToEquatableArray(), inFeatures, outFeatures, true, presence);
        var creations = Creations(member, declaring).ToList();
        var shapes = creations.Select(Shape).Distinct().ToList();
        // Several assignments that disagree leave the shape to run time.
        var shape = shapes.Count == 1 ? shapes[0] : (DimensionSpec.Unknown, DimensionSpec.Unknown, false);
        return new LayerSpec(path, lists.ToEquatableArray(), shape.Item1, shape.Item2, shape.Item3, LayerPresence.Always);
    }

    private (DimensionSpec In, DimensionSpec Out, bool IsFloatLinear) Shape(IObjectCreationOperation creation)
    {
        var inFeatures = DimensionSpec.Unknown;
        var outFeatures = DimensionSpec.Unknown;
        foreach (var argument in creation.Arguments)
        {
            if (argument.Value.ConstantValue is not { HasValue: true, Value: int value } || value < 1) continue;
            if (argument.Parameter?.Name == "inFeatures") inFeatures = DimensionSpec.Constant(value);
            else if (argument.Parameter?.Name == "outFeatures") outFeatures = DimensionSpec.Constant(value);
        }
        return (inFeatures, outFeatures, KnownSymbols.DerivesFrom(creation.Type, _known.Linear));
    }

    /// <summary>The <c>new X(...)</c> expressions assigned to <paramref name="member"/>: its initializer, or assignments in constructors.</summary>
    private IEnumerable<IObjectCreationOperation> Creations(ISymbol member, INamedTypeSymbol declaring)
    {
        foreach (var reference in member.DeclaringSyntaxReferences)
        {
            var initializer = reference.GetSyntax(_cancellationToken) switch
            {
                VariableDeclaratorSyntax field => field.Initializer?.Value,
                PropertyDeclarationSyntax property => property.Initializer?.Value,
                _ => null,
            };
            if (initializer != null && Creation(Model(initializer).GetOperation(initializer, _cancellationToken)) is { } fromInitializer)
                yield return fromInitializer;
        }
        foreach (var constructor in declaring.InstanceConstructors)
        {
            foreach (var reference in constructor.DeclaringSyntaxReferences)
            {
                if (reference.GetSyntax(_cancellationToken) is not ConstructorDeclarationSyntax syntax) continue;
                var body = Model(syntax).GetOperation(syntax, _cancellationToken);
                if (body == null) continue;
                foreach (var assignment in body.Descendants().OfType<ISimpleAssignmentOperation>())
                {
                    var target = assignment.Target switch
                    {
                        IFieldReferenceOperation f => (ISymbol)f.Field,
                        IPropertyReferenceOperation p => p.Property,
                        _ => null,
                    };
                    if (SymbolEqualityComparer.Default.Equals(target, member) && Creation(assignment.Value) is { } fromConstructor)
                        yield return fromConstructor;
                }
            }
        }
    }

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
                model ??= Model(declaration);
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

    private SemanticModel Model(SyntaxNode node) => _known.Compilation.GetSemanticModel(node.SyntaxTree);

    // Sees through conversions (a Linear stored in a LinearBase) and RegisterModule("name", new Linear(...)).
    private static IObjectCreationOperation? Creation(IOperation? operation) => operation switch
    {
        IObjectCreationOperation creation => creation,
        IConversionOperation conversion => Creation(conversion.Operand),
        IInvocationOperation { TargetMethod.Name: "RegisterModule" } invocation =>
            Creation(invocation.Arguments.FirstOrDefault(a => a.Parameter?.Name == "module")?.Value),
        IArgumentOperation argument => Creation(argument.Value),
        _ => null,
    };
}

/// <summary>A child module: its path template, the member holding it, and the member's module type.</summary>
internal sealed record ModuleNode(string Path, ISymbol Member, INamedTypeSymbol Type, bool IsLinear);
