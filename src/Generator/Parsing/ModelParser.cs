using System.Collections.Generic;
using System.Linq;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>Turns an annotated class symbol into a <see cref="ModelSpec"/>: attribute values and the module graph.</summary>
internal static class ModelParser
{
    /// <summary>
    /// The spec of the class <paramref name="context"/> points at, or null when there is nothing to generate: the class
    /// (or a containing type) is not partial, is generic, is not a module, or <paramref name="context"/> is not its first
    /// method attribute (a class declares one method; several [LoRA]s are its adapters, generated once).
    /// </summary>
    public static ModelSpec? Parse(GeneratorAttributeSyntaxContext context, CancellationToken cancellationToken)
    {
        if (context.TargetSymbol is not INamedTypeSymbol type || context.Attributes.IsEmpty || context.Attributes[0].AttributeClass is not { } attribute)
            return null;
        var known = KnownSymbols.From(context.SemanticModel.Compilation, attribute.ContainingAssembly);
        if (known == null || !KnownSymbols.DerivesFrom(type, known.Module)) return null;

        var methods = MethodParser.MethodAttributes(type);
        // A partial class may carry its attributes on several declarations; generate once, from the first of them.
        if (methods.Count == 0 || !SameApplication(methods[0], context.Attributes[0])) return null;
        bool isLoRA = KnownSymbols.AttributeName(methods[0].AttributeClass) == KnownSymbols.LoRAAttribute;
        var loraAttributes = isLoRA ? methods.Where(a => KnownSymbols.AttributeName(a.AttributeClass) == KnownSymbols.LoRAAttribute).ToList() : new List<AttributeData>();
        var method = isLoRA ? null : MethodParser.Read(methods[0]);
        if (!isLoRA && method == null) return null;

        var containing = new List<TypeDeclarationSpec>();
        for (var t = type; t != null; t = t.ContainingType)
        {
            if (t.IsGenericType || !IsPartial(t, cancellationToken)) return null;
            containing.Insert(0, new TypeDeclarationSpec(Keyword(t), t.Name));
        }
        var self = containing[containing.Count - 1];
        containing.RemoveAt(containing.Count - 1);

        var adapters = loraAttributes.Select(ReadAdapter).Where(a => a != null).Select(a => a!).ToEquatableArray();
        if (isLoRA && adapters.Count == 0) return null;

        var walker = new ModuleGraphWalker(known, cancellationToken);
        walker.Walk(type);

        bool isLlama = known.IsLlama(type);
        string? ns = type.ContainingNamespace.IsGlobalNamespace ? null : type.ContainingNamespace.ToDisplayString();
        string typePath = string.Join(".", containing.Select(c => c.Name).Concat(new[] { self.Name }));
        return new ModelSpec(
            ns,
            containing.ToEquatableArray(),
            self,
            type.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat),
            (ns == null ? "" : ns + ".") + typePath + ".g.cs",
            adapters,
            ReadQuantize(Find(type, known.Quantize)),
            Find(type, known.LoRAPlus) is { } plus && plus.ConstructorArguments.Length == 1 ? ToDouble(plus.ConstructorArguments[0]) : null,
            Find(type, known.ModelConfig) is { } config && config.ConstructorArguments.Length == 1 ? config.ConstructorArguments[0].Value as string : null,
            walker.Layers.ToEquatableArray(),
            walker.Overrides.ToEquatableArray(),
            method,
            MethodParser.ReadTraining(type),
            isLlama,
            isLlama && known.HasLlamaConfigConstructor(type));
    }

    private static bool SameApplication(AttributeData a, AttributeData b) =>
        a.ApplicationSyntaxReference is { } x && b.ApplicationSyntaxReference is { } y
        && x.SyntaxTree == y.SyntaxTree && x.Span == y.Span;

    private static bool IsPartial(INamedTypeSymbol type, CancellationToken cancellationToken) =>
        type.DeclaringSyntaxReferences.Length > 0
        && type.DeclaringSyntaxReferences.All(r => r.GetSyntax(cancellationToken) is TypeDeclarationSyntax d
            && d.Modifiers.Any(m => m.Text == "partial"));

    private static string Keyword(INamedTypeSymbol type) => type switch
    {
        { IsRecord: true, TypeKind: TypeKind.Struct } => "record struct",
        { IsRecord: true } => "record",
        { TypeKind: TypeKind.Struct } => "struct",
        { TypeKind: TypeKind.Interface } => "interface",
        _ => "class",
    };

    private static AttributeData? Find(INamedTypeSymbol type, INamedTypeSymbol? attribute) =>
        attribute == null ? null : type.GetAttributes().FirstOrDefault(a => KnownSymbols.Is(a.AttributeClass, attribute));

    private static AdapterSpec? ReadAdapter(AttributeData attribute)
    {
        if (attribute.AttributeConstructor is not { } constructor) return null;
        int rank = 0;
        double alpha = 8;
        string? targets = null;
        for (int i = 0; i < constructor.Parameters.Length && i < attribute.ConstructorArguments.Length; i++)
        {
            var value = attribute.ConstructorArguments[i];
            switch (constructor.Parameters[i].Name)
            {
                case "rank": rank = value.Value is int r ? r : 0; break;
                case "alpha": alpha = ToDouble(value) ?? alpha; break;
                case "targets": targets = value.Value as string; break;
            }
        }
        var initType = constructor.ContainingAssembly.GetTypeByMetadataName("PeftGen.Methods.LoRA.LoRAInit");
        var biasType = constructor.ContainingAssembly.GetTypeByMetadataName("PeftGen.Methods.LoRA.LoRABias");
        var spec = new AdapterSpec(
            "default", rank, alpha, TargetParser.Parse(targets), 0, false, false,
            EnumValue(initType, 0), EnumValue(biasType, 0), EquatableArray<string>.Empty, null, 0);
        foreach (var named in attribute.NamedArguments)
        {
            var value = named.Value;
            spec = named.Key switch
            {
                "Dropout" => spec with { Dropout = ToDouble(value) ?? 0 },
                "UseRsLoRA" => spec with { UseRsLoRA = value.Value is true },
                "UseDoRA" => spec with { UseDoRA = value.Value is true },
                "Init" => spec with { Init = EnumValue(value) },
                "Bias" => spec with { Bias = EnumValue(value) },
                "Exclude" => spec with { Exclude = TargetParser.SplitList(value.Value as string) },
                "Layers" => spec with { Layers = value.IsNull ? null : value.Values.Select(v => v.Value is int n ? n : 0).ToEquatableArray() },
                "Name" => spec with { Name = value.Value as string ?? "default" },
                "Seed" => spec with { Seed = value.Value is int s ? s : 0 },
                "UseLoRAFA" => spec with { UseLoRAFA = value.Value is true },
                "LoRAFAGradientCorrection" => spec with { LoRAFAGradientCorrection = value.Value is true },
                _ => spec,
            };
        }
        return spec;
    }

    private static QuantizeSpec? ReadQuantize(AttributeData? attribute)
    {
        if (attribute?.AttributeConstructor is not { } constructor || attribute.ConstructorArguments.Length != 1) return null;
        var dtype = constructor.ContainingAssembly.GetTypeByMetadataName("PeftGen.Tensors.DType");
        var spec = new QuantizeSpec(EnumValue(attribute.ConstructorArguments[0]), true, 64, EnumValue(dtype, 0));
        foreach (var named in attribute.NamedArguments)
        {
            spec = named.Key switch
            {
                "DoubleQuant" => spec with { DoubleQuant = named.Value.Value is true },
                "BlockSize" => spec with { BlockSize = named.Value.Value is int b ? b : 64 },
                "ComputeType" => spec with { ComputeType = EnumValue(named.Value) },
                _ => spec,
            };
        }
        return spec;
    }

    internal static double? ToDouble(TypedConstant constant) => constant.Value switch
    {
        double d => d,
        float f => f,
        int i => i,
        _ => null,
    };

    private static EnumValueSpec EnumValue(TypedConstant constant) =>
        EnumValue(constant.Type as INamedTypeSymbol, constant.Value is { } v ? System.Convert.ToInt64(v, System.Globalization.CultureInfo.InvariantCulture) : 0);

    internal static EnumValueSpec EnumValue(INamedTypeSymbol? enumType, long value)
    {
        string typeName = enumType?.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat) ?? "";
        var member = enumType?.GetMembers().OfType<IFieldSymbol>().FirstOrDefault(f =>
            f.HasConstantValue && System.Convert.ToInt64(f.ConstantValue, System.Globalization.CultureInfo.InvariantCulture) == value);
        return new EnumValueSpec(typeName, member?.Name, value);
    }
}
