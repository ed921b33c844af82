using System.Collections.Immutable;
using System.Threading;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Methods;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// The one reader of PeftGen's class attributes, for the generator and the analyzers alike: one pass over a class's
/// attributes finds its method (read by the method's definition) and its companions (read with their defaults), then a
/// module class is walked. The analyzers check the <see cref="ModelDeclaration"/> it returns; the generator turns it
/// into a <see cref="ModelSpec"/>.
/// </summary>
internal static class ModelReader
{
    /// <summary>
    /// The generator's spec of the class <paramref name="context"/> points at, or null when there is nothing to generate:
    /// the class (or a containing type) is not partial, is generic, is not a module, or <paramref name="context"/> is not
    /// its first method attribute (a class declares one method; several [LoRA]s are its adapters, generated once).
    /// </summary>
    public static ModelSpec? Parse(GeneratorAttributeSyntaxContext context, CancellationToken cancellationToken)
    {
        if (context.TargetSymbol is not INamedTypeSymbol type || context.Attributes.IsEmpty || context.Attributes[0].AttributeClass is not { } attribute)
            return null;
        // The runtime's types are looked up in the attribute's own assembly (see KnownSymbols).
        var known = KnownSymbols.From(context.SemanticModel.Compilation, attribute.ContainingAssembly);
        if (known == null || !KnownSymbols.DerivesFrom(type, known.Module)) return null;

        var declaration = ReadAttributes(type, known);
        // A partial class may carry its attributes on several declarations; generate once, from the first of them.
        if (declaration?.Method is not { } method || !SameApplication(method.Attributes[0], context.Attributes[0])) return null;
        for (var t = type; t != null; t = t.ContainingType)
            if (t.IsGenericType) return null;
        if (!declaration.IsPartial(cancellationToken)) return null;

        declaration.Walk = ModuleWalker.Walk(type, known, collectNodes: false, cancellationToken);
        return declaration.ToSpec();
    }

    /// <summary>
    /// The analyzers' reading of <paramref name="type"/>, module walk and child modules included, or null when it carries
    /// no PeftGen class attribute.
    /// </summary>
    public static ModelDeclaration? Read(INamedTypeSymbol type, KnownSymbols known, CancellationToken cancellationToken)
    {
        var declaration = ReadAttributes(type, known);
        if (declaration is { IsModule: true })
            declaration.Walk = ModuleWalker.Walk(type, known, collectNodes: true, cancellationToken);
        return declaration;
    }

    /// <summary>Whether <paramref name="type"/> carries a PeftGen method or companion attribute; cheap, for analyzers' symbol actions.</summary>
    public static bool HasPeftAttributes(INamedTypeSymbol type)
    {
        foreach (var attribute in type.GetAttributes())
        {
            var name = KnownSymbols.PeftAttributeClass(attribute.AttributeClass);
            if (name != null && (MethodCatalog.ByAttributeClass(name) != null || Companions.Of(name) != Companion.None)) return true;
        }
        return false;
    }

    /// <summary>One pass over the class's attributes: the method, the other methods, the companions.</summary>
    private static ModelDeclaration? ReadAttributes(INamedTypeSymbol type, KnownSymbols known)
    {
        MethodDefinition? definition = null;
        var methodAttributes = ImmutableArray.CreateBuilder<AttributeData>();
        var otherMethods = ImmutableArray.CreateBuilder<AttributeData>();
        var companionAttributes = ImmutableArray.CreateBuilder<(Companion, AttributeData)>();
        var companions = new CompanionsSpec();
        var seen = Companion.None;
        foreach (var attribute in type.GetAttributes())
        {
            if (KnownSymbols.PeftAttributeClass(attribute.AttributeClass) is not { } name) continue;
            if (MethodCatalog.ByAttributeClass(name) is { } method)
            {
                if (attribute.AttributeConstructor == null) continue;
                definition ??= method;
                (method == definition ? methodAttributes : otherMethods).Add(attribute);
            }
            else if (Companions.Of(name) is var kind and not Companion.None)
            {
                companionAttributes.Add((kind, attribute));
                if ((seen & kind) == 0) companions = companions.With(kind, AttributeValues.Of(attribute));
                seen |= kind;
            }
        }
        if (definition == null && companionAttributes.Count == 0) return null;
        var declared = definition == null ? null : new MethodDeclaration(definition, methodAttributes.ToImmutable(), definition.Read(methodAttributes));
        return new ModelDeclaration(type, known, declared, otherMethods.ToImmutable(), companionAttributes.ToImmutable(), companions);
    }

    private static bool SameApplication(AttributeData a, AttributeData b) =>
        a.ApplicationSyntaxReference is { } x && b.ApplicationSyntaxReference is { } y
        && x.SyntaxTree == y.SyntaxTree && x.Span == y.Span;
}
