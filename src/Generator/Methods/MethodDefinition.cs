using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary>
/// A PEFT method's attribute values as written (defaults filled in): one record per method, LoRA included, each naming
/// the <see cref="MethodDefinition"/> that reads, plans, emits and checks it.
/// </summary>
internal abstract record MethodSpec
{
    /// <summary>The method this spec is a value of (behaviour, not part of the value).</summary>
    public abstract MethodDefinition Definition { get; }
}

/// <summary>
/// What a method's planner knows at compile time. This base is the plan of a method with nothing to plan (sparse
/// fine-tuning depends on calibration data); each method with a plan has its own record.
/// </summary>
internal record MethodPlan
{
    /// <summary>The plan of a method that has nothing to plan.</summary>
    public static MethodPlan None { get; } = new();

    /// <summary>The parameters the method trains, or null when only known at run time.</summary>
    public virtual long? TrainableParameters => null;

    /// <summary>The planned layers whose base is stored in 4 bits (<c>[Quantize]</c>), in module order.</summary>
    public virtual IEnumerable<IQuantizedRow> QuantizedLayers => [];
}

/// <summary>One row of a method's compile-time plan: an adapted layer or site.</summary>
internal interface IPlanRow
{
    string Path { get; }

    long TrainableParameters { get; }
}

/// <summary>A row of a layer whose base a method may store in 4 bits.</summary>
internal interface IQuantizedRow : IPlanRow
{
    int InFeatures { get; }

    int OutFeatures { get; }

    bool Quantized { get; }
}

/// <summary>A plan of rows (adapted layers or sites), or null rows when a shape or count is only known at run time.</summary>
internal sealed record RowPlan<TRow>(EquatableArray<TRow>? Rows) : MethodPlan
    where TRow : IEquatable<TRow>, IPlanRow
{
    public override long? TrainableParameters => Rows?.Sum(r => r.TrainableParameters);

    public override IEnumerable<IQuantizedRow> QuantizedLayers =>
        Rows is { } rows ? rows.OfType<IQuantizedRow>().Where(r => r.Quantized) : [];
}

/// <summary>A plan that is only a parameter count (prompt learning: no layers are adapted).</summary>
internal sealed record CountPlan(long? Count) : MethodPlan
{
    public override long? TrainableParameters => Count;
}

/// <summary>
/// One PEFT method, declared by one attribute: how its attribute reads into a spec, and how the spec plans against a
/// model. The generator adds how the method is emitted (<c>*.Emit.cs</c>, compiled into the generator only) and the
/// analyzers how it is checked (<c>src/Analyzers/Methods/*.Check.cs</c>), as parts of the same partial class; the
/// <see cref="MethodCatalog"/> lists every method.
/// </summary>
internal abstract partial class MethodDefinition
{
    protected MethodDefinition(string name, Companion companions)
    {
        Name = name;
        AttributeClassName = name + "Attribute";
        AttributeName = "PeftGen." + AttributeClassName;
        Companions = companions | Companion.Common;
    }

    /// <summary>The attribute as C# code writes it, "VeRA" for <c>[VeRA]</c>: the name diagnostics give the method.</summary>
    public string Name { get; }

    /// <summary>The attribute's class name in the <c>PeftGen</c> namespace: "VeRAAttribute".</summary>
    public string AttributeClassName { get; }

    /// <summary>The attribute's metadata name: "PeftGen.VeRAAttribute".</summary>
    public string AttributeName { get; }

    /// <summary>The companion attributes the method works with.</summary>
    public Companion Companions { get; }

    public bool Supports(Companion companion) => (Companions & companion) == companion;

    /// <summary>
    /// The spec of the class's method from its attributes of this method's class, in declaration order: one, or several
    /// where the attribute allows it (LoRA's named adapters).
    /// </summary>
    public abstract MethodSpec Read(IReadOnlyList<AttributeData> attributes);

    /// <summary>The method's compile-time plan of <paramref name="method"/> for the model and config of <paramref name="context"/>.</summary>
    public abstract MethodPlan Plan(MethodSpec method, PlanContext context);
}

/// <summary>A method with its spec and plan types.</summary>
/// <param name="name">The attribute as C# code writes it: "VeRA".</param>
/// <param name="companions">The companions the method works with besides <see cref="Companion.Common"/>.</param>
internal abstract partial class MethodDefinition<TSpec, TPlan>(string name, Companion companions) : MethodDefinition(name, companions)
    where TSpec : MethodSpec
    where TPlan : MethodPlan
{
    /// <summary>The spec from the first attribute; a method whose attribute may repeat reads them all.</summary>
    public override MethodSpec Read(IReadOnlyList<AttributeData> attributes) => Read(AttributeValues.Of(attributes[0]));

    /// <summary>The spec of one attribute, with the attribute's defaults where a setting is not written.</summary>
    protected abstract TSpec Read(AttributeValues values);

    public sealed override MethodPlan Plan(MethodSpec method, PlanContext context) => Plan((TSpec)method, context);

    protected abstract TPlan Plan(TSpec method, PlanContext context);
}

/// <summary>Every PEFT method the attributes can declare.</summary>
internal static class MethodCatalog
{
    /// <summary>The methods, [LoRA] first; the order in which messages list them.</summary>
    public static readonly MethodDefinition[] All =
    [
        LoRAMethod.Instance, VeRAMethod.Instance, IA3Method.Instance, PromptTuningMethod.Instance, PrefixTuningMethod.Instance,
        PTuningMethod.Instance, BottleneckMethod.Instance, SparseFineTuningMethod.Instance,
    ];

    /// <summary>The method whose attribute class (in the <c>PeftGen</c> namespace) is <paramref name="className"/>, or null.</summary>
    public static MethodDefinition? ByAttributeClass(string? className)
    {
        foreach (var method in All)
            if (method.AttributeClassName == className) return method;
        return null;
    }
}
