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
/// What every PeftGen analyzer needs once per compilation: the runtime's symbols, the config files and the analysis of
/// each model class. The analyzers share one instance per compilation (as roslyn-analyzers share their
/// <c>WellKnownTypeProvider</c>), so a model is read, walked, planned and checked once per edit, not once per analyzer.
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
    /// <see cref="ModelAnalysis.Create"/> for <paramref name="type"/>, made once per compilation; null, without a look at
    /// the cache, for the many types with no PeftGen attribute. A cancelled analysis is not stored; racing analyzers may
    /// both make one and keep the first.
    /// </summary>
    public ModelAnalysis? Model(INamedTypeSymbol type, CancellationToken cancellationToken) =>
        !ModelReader.HasPeftAttributes(type) ? null
        : _models.TryGetValue(type, out var model) ? model
        : _models.GetOrAdd(type, ModelAnalysis.Create(type, this, cancellationToken));

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
