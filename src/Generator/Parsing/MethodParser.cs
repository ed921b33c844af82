using System.Collections.Generic;
using System.Linq;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// Reads the method attributes other than <c>[LoRA]</c> and the training companions into specs, with the attributes'
/// defaults. Shared by the generator and the analyzers, so both see the same values.
/// </summary>
internal static class MethodParser
{
    /// <summary>The class's method attributes (<c>[LoRA]</c>, <c>[VeRA]</c>, …) in declaration order.</summary>
    public static List<AttributeData> MethodAttributes(INamedTypeSymbol type) =>
        type.GetAttributes().Where(a => a.AttributeConstructor != null && IsMethod(a.AttributeClass)).ToList();

    /// <summary>Whether <paramref name="attribute"/> is one of the method attributes.</summary>
    public static bool IsMethod(INamedTypeSymbol? attribute) =>
        attribute != null && KnownSymbols.AttributeName(attribute) is { } name && System.Array.IndexOf(KnownSymbols.MethodAttributes, name) >= 0;

    /// <summary>The attribute's short name as written in C#: "VeRA" for <c>PeftGen.VeRAAttribute</c>.</summary>
    public static string ShortName(AttributeData attribute)
    {
        string name = attribute.AttributeClass?.Name ?? "";
        return name.EndsWith("Attribute", System.StringComparison.Ordinal) ? name.Substring(0, name.Length - "Attribute".Length) : name;
    }

    /// <summary>The spec of a method attribute other than <c>[LoRA]</c>, or null for <c>[LoRA]</c> or an unknown attribute.</summary>
    public static MethodSpec? Read(AttributeData attribute)
    {
        if (attribute.AttributeConstructor is not { } constructor) return null;
        var v = new Values(attribute);
        var assembly = constructor.ContainingAssembly;
        switch (KnownSymbols.AttributeName(attribute.AttributeClass))
        {
            case KnownSymbols.VeRAAttribute:
                return new VeraSpec(
                    v.Int("Rank"), TargetParser.Parse(v.String("Targets")), v.Double("DInitial", 0.1), v.Int("ProjectionSeed"),
                    v.Bool("SaveProjection", true), v.Double("Dropout", 0), TargetParser.SplitList(v.String("Exclude")), v.Ints("Layers"), v.Int("Seed"));
            case KnownSymbols.IA3Attribute:
            {
                var targets = TargetParser.Parse(v.String("Targets") ?? "k_proj,v_proj,down_proj");
                string? feedForward = v.String("FeedForward");
                // PEFT's Llama default, down_proj, wherever the targets may select it; an explicit "" means none.
                var resolved = feedForward == null
                    ? (targets.Kind != TargetKind.List || targets.Names.Contains("down_proj") ? TargetParser.Parse("down_proj") : null)
                    : feedForward.Trim().Length == 0 ? null : TargetParser.Parse(feedForward);
                return new IA3Spec(targets, resolved, TargetParser.SplitList(v.String("Exclude")), v.Bool("InitWeights", true), v.Int("Seed"));
            }
            case KnownSymbols.PromptTuningAttribute:
                return new PromptSpec(PeftMethod.PromptTuning, v.Int("VirtualTokens"), v.String("InitText"), false, 0, default, v.Int("Seed"));
            case KnownSymbols.PrefixTuningAttribute:
                return new PromptSpec(PeftMethod.PrefixTuning, v.Int("VirtualTokens"), null, v.Bool("Projection", false), v.Int("EncoderHiddenSize"), default, v.Int("Seed"));
            case KnownSymbols.PTuningAttribute:
                return new PromptSpec(PeftMethod.PTuning, v.Int("VirtualTokens"), null, false, v.Int("EncoderHiddenSize"),
                    v.Enum("EncoderType", assembly, "PeftGen.Methods.PromptLearning.PromptEncoderType", 0), v.Int("Seed"));
            case KnownSymbols.BottleneckAttribute:
                return new BottleneckSpec(
                    v.Int("Size"), v.Int("ReductionFactor", 16),
                    v.Enum("Placement", assembly, "PeftGen.Methods.Bottleneck.BottleneckPlacement", 2),
                    v.Enum("Activation", assembly, "PeftGen.Methods.Bottleneck.BottleneckActivation", 0),
                    v.Bool("Bias", true), v.Ints("Layers"), v.Int("Seed"));
            case KnownSymbols.SparseFineTuningAttribute:
                return new SparseSpec(
                    v.Double("Fraction", 0), TargetParser.Parse(v.String("Targets") ?? "all-linear"),
                    v.Enum("Score", assembly, "PeftGen.Methods.Sparse.SparseScore", 1), v.Int("CalibrationBatches", 4));
            default:
                return null;
        }
    }

    /// <summary>The class's training companions, or null when it has none.</summary>
    public static TrainingSpec? ReadTraining(INamedTypeSymbol type)
    {
        DeltaLoRASpec? delta = null;
        LayerDropSpec? drop = null;
        double? decay = null;
        foreach (var attribute in type.GetAttributes())
        {
            if (attribute.AttributeConstructor is not { } constructor) continue;
            var v = new Values(attribute);
            switch (KnownSymbols.AttributeName(attribute.AttributeClass))
            {
                case KnownSymbols.DeltaLoRAAttribute:
                    delta = new DeltaLoRASpec(v.Int("StartStep", 500), v.Double("UpdateRatio", 2));
                    break;
                case KnownSymbols.LayerDropAttribute:
                    drop = new LayerDropSpec(v.Double("Probability", 0),
                        v.Enum("Schedule", constructor.ContainingAssembly, "PeftGen.Methods.LayerDrop.LayerDropSchedule", 0), v.Ints("Layers"), v.Int("Seed"));
                    break;
                case KnownSymbols.LayerwiseLearningRateAttribute:
                    decay = v.Double("Decay", 1);
                    break;
            }
        }
        return delta == null && drop == null && decay == null ? null : new TrainingSpec(delta, drop, decay);
    }

    /// <summary>An attribute's arguments by property name: constructor parameters matched case-insensitively, then named ones.</summary>
    private readonly struct Values
    {
        private readonly Dictionary<string, TypedConstant> _values;

        public Values(AttributeData attribute)
        {
            _values = new Dictionary<string, TypedConstant>(System.StringComparer.OrdinalIgnoreCase);
            var parameters = attribute.AttributeConstructor!.Parameters;
            for (int i = 0; i < parameters.Length && i < attribute.ConstructorArguments.Length; i++)
                _values[parameters[i].Name] = attribute.ConstructorArguments[i];
            foreach (var named in attribute.NamedArguments) _values[named.Key] = named.Value;
        }

        public int Int(string name, int fallback = 0) => _values.TryGetValue(name, out var c) && c.Value is int i ? i : fallback;

        public double Double(string name, double fallback) => _values.TryGetValue(name, out var c) ? ModelParser.ToDouble(c) ?? fallback : fallback;

        public bool Bool(string name, bool fallback) => _values.TryGetValue(name, out var c) && c.Value is bool b ? b : fallback;

        public string? String(string name) => _values.TryGetValue(name, out var c) ? c.Value as string : null;

        public EquatableArray<int>? Ints(string name) =>
            _values.TryGetValue(name, out var c) && !c.IsNull && c.Kind == TypedConstantKind.Array
                ? c.Values.Select(x => x.Value is int n ? n : 0).ToEquatableArray()
                : null;

        public EnumValueSpec Enum(string name, IAssemblySymbol assembly, string enumType, long fallback) =>
            _values.TryGetValue(name, out var c) && c.Type is INamedTypeSymbol type
                ? ModelParser.EnumValue(type, c.Value is { } value ? System.Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture) : 0)
                : ModelParser.EnumValue(assembly.GetTypeByMetadataName(enumType), fallback);
    }
}
