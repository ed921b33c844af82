using System.Linq;
using Microsoft.CodeAnalysis;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// The runtime types the parser recognises, resolved once per parse from the PeftGen runtime assembly itself: a lookup in
/// one metadata assembly, where the compilation-wide lookup searches every reference (about 180 in a .NET app) on
/// every new compilation, that is on every keystroke.
/// </summary>
internal sealed class KnownSymbols
{
    /// <summary>The runtime's Llama model, which prompt learning and layer drop need.</summary>
    public const string LlamaForCausalLM = "PeftGen.Models.Llama.LlamaForCausalLM";

    /// <summary>The Llama configuration, whose constructor a generated <c>FromPretrained</c> calls.</summary>
    public const string LlamaConfig = "PeftGen.Models.Llama.LlamaConfig";

    private KnownSymbols(Compilation compilation, IAssemblySymbol runtime, INamedTypeSymbol module, INamedTypeSymbol linearBase, INamedTypeSymbol linear, INamedTypeSymbol moduleList)
    {
        Compilation = compilation;
        Module = module;
        LinearBase = linearBase;
        Linear = linear;
        ModuleList = moduleList;
        ModuleName = runtime.GetTypeByMetadataName("PeftGen.ModuleNameAttribute");
        LoRAOverride = runtime.GetTypeByMetadataName("PeftGen.LoRAOverrideAttribute");
        NoLoRA = runtime.GetTypeByMetadataName("PeftGen.NoLoRAAttribute");
        AdapterSlot = runtime.GetTypeByMetadataName("PeftGen.AdapterSlotAttribute");
        Llama = runtime.GetTypeByMetadataName(LlamaForCausalLM);
        LlamaConfigType = runtime.GetTypeByMetadataName(LlamaConfig);
    }

    public Compilation Compilation { get; }

    /// <summary>The runtime's <c>LlamaForCausalLM</c>.</summary>
    public INamedTypeSymbol? Llama { get; }

    /// <summary>Whether <paramref name="type"/> derives from the runtime's <c>LlamaForCausalLM</c> (prompt learning and layer drop need it).</summary>
    public bool IsLlama(INamedTypeSymbol type) => Llama != null && DerivesFrom(type, Llama);

    /// <summary>The runtime's <c>LlamaConfig</c>.</summary>
    public INamedTypeSymbol? LlamaConfigType { get; }

    /// <summary>
    /// Whether <paramref name="type"/> can be created as <c>new T(config)</c> from code inside it: it is not abstract and
    /// declares an instance constructor whose one parameter is a by-value <c>LlamaConfig</c> (any accessibility).
    /// </summary>
    public bool HasLlamaConfigConstructor(INamedTypeSymbol type) =>
        LlamaConfigType != null && !type.IsAbstract
        && type.InstanceConstructors.Any(c => c.Parameters.Length == 1 && c.Parameters[0] is { RefKind: RefKind.None, IsParams: false } p
            && Is(p.Type, LlamaConfigType));

    public INamedTypeSymbol Module { get; }

    public INamedTypeSymbol LinearBase { get; }

    public INamedTypeSymbol Linear { get; }

    public INamedTypeSymbol ModuleList { get; }

    public INamedTypeSymbol? ModuleName { get; }

    public INamedTypeSymbol? LoRAOverride { get; }

    /// <summary>Members carrying it hold adapters inserted later; module walks skip them.</summary>
    public INamedTypeSymbol? AdapterSlot { get; }

    /// <summary>Whether <paramref name="member"/> is an adapter slot (see <c>PeftGen.AdapterSlotAttribute</c>).</summary>
    public bool IsAdapterSlot(ISymbol member) =>
        AdapterSlot != null && member.GetAttributes().Any(a => SymbolEqualityComparer.Default.Equals(a.AttributeClass, AdapterSlot));

    public INamedTypeSymbol? NoLoRA { get; }

    /// <summary>The symbols, or null when the compilation does not reference the PeftGen runtime.</summary>
    public static KnownSymbols? From(Compilation compilation) =>
        compilation.GetTypeByMetadataName("PeftGen.Nn.Module") is { } module ? From(compilation, module.ContainingAssembly) : null;

    /// <summary>The symbols from <paramref name="runtime"/> (the assembly that declares a PeftGen attribute), or null when it is not the PeftGen runtime.</summary>
    public static KnownSymbols? From(Compilation compilation, IAssemblySymbol runtime)
    {
        var module = runtime.GetTypeByMetadataName("PeftGen.Nn.Module");
        var linearBase = runtime.GetTypeByMetadataName("PeftGen.Nn.LinearBase");
        var linear = runtime.GetTypeByMetadataName("PeftGen.Nn.Linear");
        var moduleList = runtime.GetTypeByMetadataName("PeftGen.Nn.ModuleList`1");
        return module == null || linearBase == null || linear == null || moduleList == null
            ? null
            : new KnownSymbols(compilation, runtime, module, linearBase, linear, moduleList);
    }

    /// <summary>
    /// "VeRAAttribute" for a type declared directly in the <c>PeftGen</c> namespace (where the attributes live), null for
    /// any other type: a class attribute's identity without the cost of a display string or a symbol lookup.
    /// </summary>
    public static string? PeftAttributeClass(INamedTypeSymbol? type) =>
        type is { ContainingType: null, IsGenericType: false, ContainingNamespace: { Name: "PeftGen", ContainingNamespace.IsGlobalNamespace: true } }
            ? type.Name
            : null;

    public static bool Is(ITypeSymbol? type, INamedTypeSymbol? expected) =>
        expected != null && SymbolEqualityComparer.Default.Equals(type?.OriginalDefinition, expected);

    public static bool DerivesFrom(ITypeSymbol? type, INamedTypeSymbol baseType)
    {
        for (var t = type; t != null; t = t.BaseType)
            if (Is(t, baseType)) return true;
        return false;
    }
}
