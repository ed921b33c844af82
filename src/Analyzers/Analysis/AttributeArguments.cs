using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace PeftGen.Analyzers;

/// <summary>
/// Finds the syntax of an attribute's arguments, so diagnostics point at the value that is wrong rather than at the
/// whole attribute. Constructor arguments are found by name (<c>rank: 8</c>) or by position, properties by name.
/// </summary>
internal readonly struct AttributeArguments
{
    private readonly AttributeData _data;

    private AttributeArguments(AttributeData data, AttributeSyntax? syntax)
    {
        _data = data;
        Syntax = syntax;
    }

    /// <summary>The attribute as written, or null when it comes from metadata.</summary>
    public AttributeSyntax? Syntax { get; }

    /// <summary>The attribute's location: its name and arguments, without the brackets.</summary>
    public Location Location => Syntax?.GetLocation() ?? Location.None;

    public static AttributeArguments Of(AttributeData data, CancellationToken cancellationToken) =>
        new(data, data.ApplicationSyntaxReference?.GetSyntax(cancellationToken) as AttributeSyntax);

    /// <summary>The expression passed to constructor parameter <paramref name="parameter"/>, or null when not written.</summary>
    public ExpressionSyntax? Constructor(string parameter)
    {
        if (Syntax?.ArgumentList is not { } list || _data.AttributeConstructor is not { } constructor) return null;
        int position = 0;
        foreach (var argument in list.Arguments)
        {
            if (argument.NameEquals != null) continue;
            string? name = argument.NameColon?.Name.Identifier.ValueText
                ?? (position < constructor.Parameters.Length ? constructor.Parameters[position].Name : null);
            position++;
            if (name == parameter) return argument.Expression;
        }
        return null;
    }

    /// <summary>The expression assigned to property <paramref name="property"/>, or null when not written.</summary>
    public ExpressionSyntax? Named(string property)
    {
        if (Syntax?.ArgumentList is not { } list) return null;
        foreach (var argument in list.Arguments)
            if (argument.NameEquals?.Name.Identifier.ValueText == property) return argument.Expression;
        return null;
    }

    /// <summary>Where to report a problem with a value: its expression when written, else the whole attribute.</summary>
    public Location At(ExpressionSyntax? expression) => expression?.GetLocation() ?? Location;
}
