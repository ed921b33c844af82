using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using PeftGen.Analyzers;
using PeftGen.Generator.Parsing;

namespace PeftGen.Generator.Methods;

// The checking part of every method (analyzers only): the rules of a method sit next to each other in one file here,
// Methods/<Method>.Check.cs, and report through the CheckContext from the reader's values.
internal abstract partial class MethodDefinition
{
    /// <summary>Reports what the runtime would refuse in the class's method attribute(s), where each value is written.</summary>
    public abstract void Check(CheckContext context, MethodDeclaration method);
}

internal abstract partial class MethodDefinition<TSpec, TPlan>
{
    public sealed override void Check(CheckContext context, MethodDeclaration method) => Check(context, (TSpec)method.Spec, method.Attributes);

    /// <summary>Checks <paramref name="method"/>, read from <paramref name="attributes"/> (one per LoRA adapter, else one).</summary>
    protected abstract void Check(CheckContext context, TSpec method, ImmutableArray<AttributeData> attributes);
}
