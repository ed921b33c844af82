using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using PeftGen.Generator.Methods;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// A class as <see cref="ModelReader"/> read it, symbols included: its method, its companions, and (for a module) its
/// module walk. The generator turns it into a <see cref="ModelSpec"/> at once; the analyzers keep it, and check it
/// where each value was written.
/// </summary>
internal sealed class ModelDeclaration
{
    internal ModelDeclaration(
        INamedTypeSymbol type, KnownSymbols known, MethodDeclaration? method, ImmutableArray<AttributeData> otherMethods,
        ImmutableArray<(Companion Kind, AttributeData Attribute)> companionAttributes, CompanionsSpec companions)
    {
        Type = type;
        Known = known;
        IsModule = KnownSymbols.DerivesFrom(type, known.Module);
        Method = method;
        OtherMethods = otherMethods;
        CompanionAttributes = companionAttributes;
        Companions = companions;
    }

    public INamedTypeSymbol Type { get; }

    public KnownSymbols Known { get; }

    /// <summary>The class derives from the runtime's <c>Module</c>: the generator adapts it, and it has a module walk.</summary>
    public bool IsModule { get; }

    /// <summary>The class's method (its first method attribute), or null when it declares none.</summary>
    public MethodDeclaration? Method { get; }

    /// <summary>Method attributes after the first of another method: a class declares one method, so these are ignored.</summary>
    public ImmutableArray<AttributeData> OtherMethods { get; }

    /// <summary>The companion attributes in declaration order.</summary>
    public ImmutableArray<(Companion Kind, AttributeData Attribute)> CompanionAttributes { get; }

    /// <summary>The companions' values (the first attribute of each kind).</summary>
    public CompanionsSpec Companions { get; }

    /// <summary>The module walk of a module class; null for other classes.</summary>
    public ModuleWalker? Walk { get; internal set; }

    public bool IsLlama => Known.IsLlama(Type);

    /// <summary>The first companion attribute of <paramref name="kind"/>, or null.</summary>
    public AttributeData? Companion(Companion kind) =>
        CompanionAttributes.FirstOrDefault(c => c.Kind == kind).Attribute;

    /// <summary>True when the class and every type containing it are partial in each of their declarations, as the generated declarations need.</summary>
    public bool IsPartial(CancellationToken cancellationToken)
    {
        for (var t = Type; t != null; t = t.ContainingType)
        {
            if (t.DeclaringSyntaxReferences.Length == 0
                || !t.DeclaringSyntaxReferences.All(r => r.GetSyntax(cancellationToken) is TypeDeclarationSyntax d && d.Modifiers.Any(m => m.Text == "partial")))
                return false;
        }
        return true;
    }

    /// <summary>The generator's spec of the class; needs <see cref="Method"/> and <see cref="Walk"/>.</summary>
    public ModelSpec ToSpec()
    {
        var containing = new List<TypeDeclarationSpec>();
        for (var t = Type; t != null; t = t.ContainingType)
            containing.Insert(0, new TypeDeclarationSpec(Keyword(t), t.Name));
        var self = containing[containing.Count - 1];
        containing.RemoveAt(containing.Count - 1);
        string? ns = Type.ContainingNamespace.IsGlobalNamespace ? null : Type.ContainingNamespace.ToDisplayString();
        string typePath = string.Join(".", containing.Select(c => c.Name).Concat(new[] { self.Name }));
        bool isLlama = IsLlama;
        return new ModelSpec(
            ns,
            containing.ToEquatableArray(),
            self,
            Type.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat),
            (ns == null ? "" : ns + ".") + typePath + ".g.cs",
            Method!.Spec,
            Companions,
            Walk!.Layers.ToEquatableArray(),
            Walk.Overrides.ToEquatableArray(),
            isLlama,
            isLlama && Known.HasLlamaConfigConstructor(Type));
    }

    private static string Keyword(INamedTypeSymbol type) => type switch
    {
        { IsRecord: true, TypeKind: TypeKind.Struct } => "record struct",
        { IsRecord: true } => "record",
        { TypeKind: TypeKind.Struct } => "struct",
        { TypeKind: TypeKind.Interface } => "interface",
        _ => "class",
    };
}

/// <summary>The class's method: its definition, its attributes (several only for LoRA's adapters), and their values.</summary>
internal sealed record MethodDeclaration(MethodDefinition Definition, ImmutableArray<AttributeData> Attributes, MethodSpec Spec);
