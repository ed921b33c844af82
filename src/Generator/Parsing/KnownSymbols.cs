using System.Linq;
using Microsoft.CodeAnalysis;

namespace PeftGen.Generator.Parsing;

/// <summary>The runtime types the parser recognises, resolved once per parse.</summary>
internal sealed class KnownSymbols
{
    public const string LoRAAttribute = "PeftGen.LoRAAttribute";
    public const string QuantizeAttribute = "PeftGen.QuantizeAttribute";
    public const string LoRAPlusAttribute = "PeftGen.LoRAPlusAttribute";
    public const string ModelConfigAttribute = "PeftGen.ModelConfigAttribute";
    public const string ModuleNameAttribute = "PeftGen.ModuleNameAttribute";
    public const string LoRAOverrideAttribute = "PeftGen.LoRAOverrideAttribute";
    public const string NoLoRAAttribute = "PeftGen.NoLoRAAttribute";
    public const string AdapterSlotAttribute = "PeftGen.AdapterSlotAttribute";
    public const string VeRAAttribute = "PeftGen.VeRAAttribute";
    public const string IA3Attribute = "PeftGen.IA3Attribute";
    public const string PromptTuningAttribute = "PeftGen.PromptTuningAttribute";
    public const string PrefixTuningAttribute = "PeftGen.PrefixTuningAttribute";
    public const string PTuningAttribute = "PeftGen.PTuningAttribute";
    public const string BottleneckAttribute = "PeftGen.BottleneckAttribute";
    public const string SparseFineTuningAttribute = "PeftGen.SparseFineTuningAttribute";
    public const string DeltaLoRAAttribute = "PeftGen.DeltaLoRAAttribute";
    public const string LayerDropAttribute = "PeftGen.LayerDropAttribute";
    public const string LayerwiseLearningRateAttribute = "PeftGen.LayerwiseLearningRateAttribute";

    /// <summary>The attributes that each declare one PEFT method (a class declares one method), [LoRA] first.</summary>
    public static readonly string[] MethodAttributes =
    [
        LoRAAttribute, VeRAAttribute, IA3Attribute, PromptTuningAttribute, PrefixTuningAttribute, PTuningAttribute,
        BottleneckAttribute, SparseFineTuningAttribute,
    ];

    /// <summary>The runtime's Llama model, which prompt learning and layer drop need.</summary>
    public const string LlamaForCausalLM = "PeftGen.Models.Llama.LlamaForCausalLM";

    private KnownSymbols(Compilation compilation, INamedTypeSymbol module, INamedTypeSymbol linearBase, INamedTypeSymbol linear, INamedTypeSymbol moduleList)
    {
        Compilation = compilation;
        Module = module;
        LinearBase = linearBase;
        Linear = linear;
        ModuleList = moduleList;
        Quantize = compilation.GetTypeByMetadataName(QuantizeAttribute);
        LoRAPlus = compilation.GetTypeByMetadataName(LoRAPlusAttribute);
        ModelConfig = compilation.GetTypeByMetadataName(ModelConfigAttribute);
        ModuleName = compilation.GetTypeByMetadataName(ModuleNameAttribute);
        LoRAOverride = compilation.GetTypeByMetadataName(LoRAOverrideAttribute);
        NoLoRA = compilation.GetTypeByMetadataName(NoLoRAAttribute);
        AdapterSlot = compilation.GetTypeByMetadataName(AdapterSlotAttribute);
    }

    public Compilation Compilation { get; }

    public INamedTypeSymbol Module { get; }

    public INamedTypeSymbol LinearBase { get; }

    public INamedTypeSymbol Linear { get; }

    public INamedTypeSymbol ModuleList { get; }

    public INamedTypeSymbol? Quantize { get; }

    public INamedTypeSymbol? LoRAPlus { get; }

    public INamedTypeSymbol? ModelConfig { get; }

    public INamedTypeSymbol? ModuleName { get; }

    public INamedTypeSymbol? LoRAOverride { get; }

    /// <summary>Members carrying it hold adapters inserted later; module walks skip them.</summary>
    public INamedTypeSymbol? AdapterSlot { get; }

    /// <summary>Whether <paramref name="member"/> is an adapter slot (see <c>PeftGen.AdapterSlotAttribute</c>).</summary>
    public bool IsAdapterSlot(ISymbol member) =>
        AdapterSlot != null && member.GetAttributes().Any(a => SymbolEqualityComparer.Default.Equals(a.AttributeClass, AdapterSlot));

    public INamedTypeSymbol? NoLoRA { get; }

    /// <summary>The symbols, or null when the compilation does not reference the PeftGen runtime.</summary>
    public static KnownSymbols? From(Compilation compilation)
    {
        var module = compilation.GetTypeByMetadataName("PeftGen.Nn.Module");
        var linearBase = compilation.GetTypeByMetadataName("PeftGen.Nn.LinearBase");
        var linear = compilation.GetTypeByMetadataName("PeftGen.Nn.Linear");
        var moduleList = compilation.GetTypeByMetadataName("PeftGen.Nn.ModuleList`1");
        return module == null || linearBase == null || linear == null || moduleList == null
            ? null
            : new KnownSymbols(compilation, module, linearBase, linear, moduleList);
    }

    public static bool Is(ITypeSymbol? type, INamedTypeSymbol? expected) =>
        expected != null && SymbolEqualityComparer.Default.Equals(type?.OriginalDefinition, expected);

    public static bool DerivesFrom(ITypeSymbol? type, INamedTypeSymbol baseType)
    {
        for (var t = type; t != null; t = t.BaseType)
            if (Is(t, baseType)) return true;
        return false;
    }
}
