using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Diagnostics;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>
/// Checks [ModelConfig]: the named file must be an additional file (PEFT015) that reads as a config.json with the
/// fields the model's shapes need (PEFT016). Without them the generator silently plans nothing at compile time.
/// </summary>
[DiagnosticAnalyzer(LanguageNames.CSharp)]
public sealed class ModelConfigAnalyzer : DiagnosticAnalyzer
{
    /// <inheritdoc />
    public override ImmutableArray<DiagnosticDescriptor> SupportedDiagnostics { get; } = ImmutableArray.Create(
        DiagnosticCatalog.ModelConfigNotFound, DiagnosticCatalog.InvalidModelConfig);

    /// <inheritdoc />
    public override void Initialize(AnalysisContext context)
    {
        context.EnableConcurrentExecution();
        context.ConfigureGeneratedCodeAnalysis(GeneratedCodeAnalysisFlags.None);
        context.RegisterCompilationStartAction(start =>
        {
            if (PeftCompilation.From(start.Compilation, start.Options) is not { } peft) return;
            start.RegisterSymbolAction(symbol => Analyze(symbol, peft), SymbolKind.NamedType);
        });
    }

    private static void Analyze(SymbolAnalysisContext context, PeftCompilation peft)
    {
        var type = (INamedTypeSymbol)context.Symbol;
        if (ModelAnalysis.Find(type, peft.Known.ModelConfig) is not { ConstructorArguments.Length: 1 } attribute
            || attribute.ConstructorArguments[0].Value is not string path) return;
        var arguments = AttributeArguments.Of(attribute, context.CancellationToken);
        var at = arguments.At(arguments.Constructor("path"));

        // The generator's rule (AdapterPlanner.FindConfig): the file whose path equals the given one or ends with "/" + it.
        string wanted = path.Replace('\\', '/');
        if (wanted.StartsWith("./", StringComparison.Ordinal)) wanted = wanted.Substring(2);
        var matches = peft.JsonFiles().Where(f =>
        {
            string p = f.Path.Replace('\\', '/');
            return p == wanted || p.EndsWith("/" + wanted, StringComparison.Ordinal);
        }).ToList();
        if (matches.Count == 0)
        {
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.ModelConfigNotFound, at, path));
            return;
        }
        if (matches.Count > 1)
        {
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.InvalidModelConfig, at, path,
                "it matches " + matches.Count + " additional files (" + string.Join(", ", matches.Select(m => m.Path)) + "); give enough of the path to name one"));
            return;
        }

        var file = matches[0];
        if (ModelConfigReader.Read(file.Path, file.GetText(context.CancellationToken)?.ToString()) is not { } config)
        {
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.InvalidModelConfig, at, file.Path,
                "it is not a JSON object; pass the model's Hugging Face config.json"));
            return;
        }
        if (!KnownSymbols.DerivesFrom(type, peft.Known.Module)) return;
        var walker = new ModuleGraphWalker(peft.Known, context.CancellationToken);
        walker.Walk(type);
        var missing = MissingFields(walker.Layers, config);
        if (missing.Count > 0)
        {
            context.ReportDiagnostic(Diagnostic.Create(DiagnosticCatalog.InvalidModelConfig, at, file.Path,
                "it has no positive integer " + string.Join(", ", missing) + ", which the shapes of '" + type.Name + "' need; add the field from the model's config.json"));
        }
    }

    /// <summary>The config.json fields the model's config-sized layers read that the file lacks, in a stable order.</summary>
    private static List<string> MissingFields(IEnumerable<LayerSpec> layers, ModelConfigSpec config)
    {
        var needed = new SortedSet<ConfigDimension>();
        foreach (var layer in layers)
        {
            if (layer.Presence == LayerPresence.UnlessTiedEmbeddings && config.TieWordEmbeddings) continue;
            needed.Add(layer.InFeatures.FromConfig);
            needed.Add(layer.OutFeatures.FromConfig);
            foreach (var count in layer.ListCounts) needed.Add(count.FromConfig);
        }
        var missing = new List<string>();
        foreach (var dimension in needed)
        {
            switch (dimension)
            {
                case ConfigDimension.HiddenSize: Require(config.HiddenSize, "hidden_size"); break;
                case ConfigDimension.IntermediateSize: Require(config.IntermediateSize, "intermediate_size"); break;
                case ConfigDimension.QueryWidth:
                case ConfigDimension.KeyValueWidth:
                    Require(config.NumAttentionHeads, "num_attention_heads");
                    // The head size is head_dim, or hidden_size / num_attention_heads without it.
                    Require(config.HeadDim ?? config.HiddenSize, "hidden_size");
                    break;
                case ConfigDimension.VocabSize: Require(config.VocabSize, "vocab_size"); break;
                case ConfigDimension.NumHiddenLayers: Require(config.NumHiddenLayers, "num_hidden_layers"); break;
            }
        }
        return missing;

        void Require(int? value, string field)
        {
            if (value == null && !missing.Contains(field)) missing.Add(field);
        }
    }
}
