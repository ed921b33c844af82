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
    private readonly AttributeData _attribute;

    private AttributeValues(AttributeData attribute) => _attribute = attribute;

    public static AttributeValues Of(AttributeData attribute) => new(attribute);

    // A named argument wins over a constructor parameter of the same name; an attribute has a handful of each, so a
    // scan costs less than building a dictionary on every keystroke.
    private bool TryGet(string name, out TypedConstant value)
    {
        foreach (var named in _attribute.NamedArguments)
        {
            if (!string.Equals(named.Key, name, System.StringComparison.OrdinalIgnoreCase)) continue;
            value = named.Value;
            return true;
        }
        if (_attribute.AttributeConstructor is { } constructor)
        {
            var parameters = constructor.Parameters;
            for (int i = 0; i < parameters.Length && i < _attribute.ConstructorArguments.Length; i++)
            {
                if (!string.Equals(parameters[i].Name, name, System.StringComparison.OrdinalIgnoreCase)) continue;
                value = _attribute.ConstructorArguments[i];
                return true;
            }
        }
        value = default;
        return false;
    }

    public int Int(string name, int fallback = 0) => TryGet(name, out var c) && c.Value is int i ? i : fallback;

    public double Double(string name, double fallback) => TryGet(name, out var c) ? ToDouble(c) ?? fallback : fallback;

    /// <summary>The value when it is written (or a constructor default), else null.</summary>
    public double? Double(string name) => TryGet(name, out var c) ? ToDouble(c) : null;

    public bool Bool(string name, bool fallback) => TryGet(name, out var c) && c.Value is bool b ? b : fallback;

    public string? String(string name) => TryGet(name, out var c) ? c.Value as string : null;

    public EquatableArray<int>? Ints(string name) =>
        TryGet(name, out var c) && !c.IsNull && c.Kind == TypedConstantKind.Array
            ? c.Values.Select(x => x.Value is int n ? n : 0).ToEquatableArray()
            : null;

    /// <summary>The enum value <paramref name="name"/> holds, or <paramref name="fallback"/> of the runtime's enum <paramref name="enumType"/>.</summary>
    public EnumValueSpec Enum(string name, string enumType, long fallback) =>
        TryGet(name, out var c) && c.Type is INamedTypeSymbol type
            ? EnumValue(type, c.Value is { } value ? System.Convert.ToInt64(value, CultureInfo.InvariantCulture) : 0)
            : EnumValue(_attribute.AttributeClass?.ContainingAssembly.GetTypeByMetadataName(enumType), fallback);

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
