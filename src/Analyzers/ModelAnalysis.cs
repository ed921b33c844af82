using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>
/// A model class as the generator sees it: its adapters, quantization, layers (through the generator's own
/// <see cref="ModuleGraphWalker"/>) and the plan <see cref="AdapterPlanner"/> computes from them, plus the full
/// <see cref="ModuleTree"/>. The generator's <c>ModelParser.Parse</c> takes a context only the generator driver can
/// create, so the attribute values are read here with the same defaults.
/// </summary>
internal sealed class ModelAnalysis
{
    private ModelAnalysis(INamedTypeSymbol type, ImmutableArray<AdapterDeclaration> adapters, GenerationSpec plan, ModuleTree tree)
    {
        Type = type;
        Adapters = adapters;
        Plan = plan;
        Tree = tree;
    }

    public INamedTypeSymbol Type { get; }

    public ImmutableArray<AdapterDeclaration> Adapters { get; }

    /// <summary>The generator's plan; an adapter's rows are null where a shape or count is only known at run time.</summary>
    public GenerationSpec Plan { get; }

    public ModuleTree Tree { get; }

    /// <summary>The analysis of a module class with <c>[LoRA]</c>, or null for any other type.</summary>
    public static ModelAnalysis? Create(INamedTypeSymbol type, PeftCompilation peft, CancellationToken cancellationToken)
    {
        var known = peft.Known;
        if (!KnownSymbols.DerivesFrom(type, known.Module)) return null;
        var adapters = AdapterDeclaration.All(type);
        if (adapters.IsEmpty) return null;

        var walker = new ModuleGraphWalker(known, cancellationToken);
        walker.Walk(type);
        var quantize = Find(type, known.Quantize);
        var config = Find(type, known.ModelConfig);
        var model = new ModelSpec(
            null,
            EquatableArray<TypeDeclarationSpec>.Empty,
            new TypeDeclarationSpec("class", type.Name),
            type.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat),
            type.Name + ".g.cs",
            adapters.Select(a => a.Spec).ToEquatableArray(),
            quantize == null ? null : ReadQuantize(quantize),
            null,
            config is { ConstructorArguments.Length: 1 } ? config.ConstructorArguments[0].Value as string : null,
            walker.Layers.ToEquatableArray(),
            walker.Overrides.ToEquatableArray());
        var plan = AdapterPlanner.Plan(model, peft.Configs(cancellationToken));
        return new ModelAnalysis(type, adapters, plan, ModuleTree.Walk(type, known, cancellationToken));
    }

    public static AttributeData? Find(INamedTypeSymbol type, INamedTypeSymbol? attribute) =>
        attribute == null ? null : type.GetAttributes().FirstOrDefault(a => KnownSymbols.Is(a.AttributeClass, attribute));

    /// <summary>The [Quantize] settings with the attribute's defaults; only the block size matters to the planner.</summary>
    public static QuantizeSpec ReadQuantize(AttributeData attribute)
    {
        int blockSize = attribute.NamedArguments.FirstOrDefault(n => n.Key == "BlockSize").Value.Value is int b ? b : 64;
        return new QuantizeSpec(default, true, blockSize, default);
    }
}

/// <summary>One <c>[LoRA]</c> attribute and its values read as the generator reads them.</summary>
internal sealed class AdapterDeclaration
{
    private AdapterDeclaration(AttributeData data, AdapterSpec spec)
    {
        Data = data;
        Spec = spec;
    }

    public AttributeData Data { get; }

    public AdapterSpec Spec { get; }

    /// <summary>The class's [LoRA] attributes in declaration order.</summary>
    public static ImmutableArray<AdapterDeclaration> All(INamedTypeSymbol type) =>
        type.GetAttributes()
            .Where(a => KnownSymbols.AttributeName(a.AttributeClass) == KnownSymbols.LoRAAttribute && a.AttributeConstructor != null)
            .Select(a => new AdapterDeclaration(a, Read(a)))
            .ToImmutableArray();

    private static AdapterSpec Read(AttributeData attribute)
    {
        int rank = 0;
        double alpha = 8;
        string? targets = null;
        var parameters = attribute.AttributeConstructor!.Parameters;
        for (int i = 0; i < parameters.Length && i < attribute.ConstructorArguments.Length; i++)
        {
            var value = attribute.ConstructorArguments[i];
            switch (parameters[i].Name)
            {
                case "rank": rank = value.Value is int r ? r : 0; break;
                case "alpha": alpha = ModelParser.ToDouble(value) ?? alpha; break;
                case "targets": targets = value.Value as string; break;
            }
        }
        var spec = new AdapterSpec("default", rank, alpha, TargetParser.Parse(targets), 0, false, false,
            default, default, EquatableArray<string>.Empty, null, 0);
        foreach (var named in attribute.NamedArguments)
        {
            var value = named.Value;
            spec = named.Key switch
            {
                "Dropout" => spec with { Dropout = ModelParser.ToDouble(value) ?? 0 },
                "UseRsLoRA" => spec with { UseRsLoRA = value.Value is true },
                "UseDoRA" => spec with { UseDoRA = value.Value is true },
                "Exclude" => spec with { Exclude = TargetParser.SplitList(value.Value as string) },
                "Layers" => spec with { Layers = value.IsNull ? null : value.Values.Select(v => v.Value is int n ? n : 0).ToEquatableArray() },
                "Name" => spec with { Name = value.Value as string ?? "default" },
                "UseLoRAFA" => spec with { UseLoRAFA = value.Value is true },
                "LoRAFAGradientCorrection" => spec with { LoRAFAGradientCorrection = value.Value is true },
                _ => spec,
            };
        }
        return spec;
    }
}

/// <summary>
/// What every PeftGen analyzer needs once per compilation: the runtime's symbols, the config files and the analysis of
/// each model class. The six analyzers share one instance per compilation (as roslyn-analyzers share their
/// <c>WellKnownTypeProvider</c>), so a model's walk and 7B-sized plan are made once per edit, not once per analyzer.
/// </summary>
internal sealed class PeftCompilation
{
    private static readonly ConditionalWeakTable<Compilation, PeftCompilation> ByCompilation = new();

    private readonly ImmutableArray<AdditionalText> _files;
    private readonly ConcurrentDictionary<INamedTypeSymbol, ModelAnalysis?> _models = new(SymbolEqualityComparer.Default);
    private StrongBox<EquatableArray<ModelConfigSpec>>? _configs;

    private PeftCompilation(KnownSymbols known, ImmutableArray<AdditionalText> files)
    {
        Known = known;
        _files = files;
    }

    public KnownSymbols Known { get; }

    /// <summary>The state for <paramref name="compilation"/>, or null when it does not reference the runtime.</summary>
    public static PeftCompilation? From(Compilation compilation, AnalyzerOptions options)
    {
        if (ByCompilation.TryGetValue(compilation, out var shared) && shared._files == options.AdditionalFiles) return shared;
        if (KnownSymbols.From(compilation) is not { } known) return null;
        var created = new PeftCompilation(known, options.AdditionalFiles);
        // The same compilation analysed with other additional files (another host's options) keeps state of its own.
        var stored = ByCompilation.GetValue(compilation, _ => created);
        return stored._files == options.AdditionalFiles ? stored : created;
    }

    /// <summary>
    /// <see cref="ModelAnalysis.Create"/> for <paramref name="type"/>, made once per compilation. A cancelled analysis is
    /// not stored; racing analyzers may both make one and keep the first.
    /// </summary>
    public ModelAnalysis? Model(INamedTypeSymbol type, CancellationToken cancellationToken) =>
        _models.TryGetValue(type, out var model) ? model : _models.GetOrAdd(type, ModelAnalysis.Create(type, this, cancellationToken));

    /// <summary>The .json additional files that read as config objects, as the generator collects them.</summary>
    public EquatableArray<ModelConfigSpec> Configs(CancellationToken cancellationToken)
    {
        // Racing threads compute equal values; the box makes whichever is stored visible whole.
        _configs ??= new StrongBox<EquatableArray<ModelConfigSpec>>(JsonFiles()
            .Select(f => ModelConfigReader.Read(f.Path, f.GetText(cancellationToken)?.ToString()))
            .Where(c => c != null)
            .Select(c => c!)
            .ToEquatableArray());
        return _configs.Value;
    }

    public IEnumerable<AdditionalText> JsonFiles() =>
        _files.Where(f => f.Path.EndsWith(".json", StringComparison.OrdinalIgnoreCase));
}
