using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// An attribute's arguments by name: constructor parameters matched case-insensitively (so <c>rank</c> and <c>Rank</c>
/// are one setting), then named ones. Every attribute is read through this one type, and each reader passes the
/// attribute's defaults next to the names, so a default is written once: where its setting is read.
/// </summary>
internal readonly struct AttributeValues
{
    private readonly Dictionary<string, TypedConstant> _values;
    private readonly IAssemblySymbol? _runtime;

    private AttributeValues(AttributeData attribute)
    {
        _values = new Dictionary<string, TypedConstant>(System.StringComparer.OrdinalIgnoreCase);
        _runtime = attribute.AttributeClass?.ContainingAssembly;
        if (attribute.AttributeConstructor is { } constructor)
        {
            var parameters = constructor.Parameters;
            for (int i = 0; i < parameters.Length && i < attribute.ConstructorArguments.Length; i++)
                _values[parameters[i].Name] = attribute.ConstructorArguments[i];
        }
        foreach (var named in attribute.NamedArguments) _values[named.Key] = named.Value;
    }

    public static AttributeValues Of(AttributeData attribute) => new(attribute);

    public int Int(string name, int fallback = 0) => _values.TryGetValue(name, out var c) && c.Value is int i ? i : fallback;

    public double Double(string name, double fallback) => _values.TryGetValue(name, out var c) ? ToDouble(c) ?? fallback : fallback;

    /// <summary>The value when it is written (or a constructor default), else null.</summary>
    public double? Double(string name) => _values.TryGetValue(name, out var c) ? ToDouble(c) : null;

    public bool Bool(string name, bool fallback) => _values.TryGetValue(name, out var c) && c.Value is bool b ? b : fallback;

    public string? String(string name) => _values.TryGetValue(name, out var c) ? c.Value as string : null;

    public EquatableArray<int>? Ints(string name) =>
        _values.TryGetValue(name, out var c) && !c.IsNull && c.Kind == TypedConstantKind.Array
            ? c.Values.Select(x => x.Value is int n ? n : 0).ToEquatableArray()
            : null;

    /// <summary>The enum value <paramref name="name"/> holds, or <paramref name="fallback"/> of the runtime's enum <paramref name="enumType"/>.</summary>
    public EnumValueSpec Enum(string name, string enumType, long fallback) =>
        _values.TryGetValue(name, out var c) && c.Type is INamedTypeSymbol type
            ? EnumValue(type, c.Value is { } value ? System.Convert.ToInt64(value, CultureInfo.InvariantCulture) : 0)
            : EnumValue(_runtime?.GetTypeByMetadataName(enumType), fallback);

    private static double? ToDouble(TypedConstant constant) => constant.Value switch
    {
        double d => d,
        float f => f,
        int i => i,
        _ => null,
    };

    private static EnumValueSpec EnumValue(INamedTypeSymbol? enumType, long value)
    {
        string typeName = enumType?.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat) ?? "";
        var member = enumType?.GetMembers().OfType<IFieldSymbol>().FirstOrDefault(f =>
            f.HasConstantValue && System.Convert.ToInt64(f.ConstantValue, CultureInfo.InvariantCulture) == value);
        return new EnumValueSpec(typeName, member?.Name, value);
    }
}
