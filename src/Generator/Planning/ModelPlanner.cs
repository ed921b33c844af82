using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Planning;

/// <summary>
/// Resolves a model against its config.json: finds the config its <c>[ModelConfig]</c> names, expands the walked layers
/// to concrete paths where every list length is known, and hands both to the model's method, whose planner computes
/// its plan with the runtime's own rules.
/// </summary>
internal static class ModelPlanner
{
    public static GenerationSpec Plan(ModelSpec model, EquatableArray<ModelConfigSpec> configs)
    {
        var config = FindConfig(model.Companions.ModelConfigPath, configs);
        var context = new PlanContext(model, config, Expand(model.Layers, config));
        return new GenerationSpec(model, model.Method.Definition.Plan(model.Method, context), config);
    }

    /// <summary>The config file the [ModelConfig] path names: the one whose path equals it or ends with "/" + it.</summary>
    internal static ModelConfigSpec? FindConfig(string? path, EquatableArray<ModelConfigSpec> configs)
    {
        var matches = Matching(path, configs, c => c.Path);
        return matches.Count == 1 ? matches[0] : null;
    }

    /// <summary>The items whose path is <paramref name="wanted"/> or ends with "/" + it, separators normalized.</summary>
    internal static List<T> Matching<T>(string? wanted, IEnumerable<T> items, Func<T, string> path)
    {
        if (wanted == null) return new List<T>();
        wanted = Normalize(wanted);
        if (wanted.StartsWith("./", StringComparison.Ordinal)) wanted = wanted.Substring(2);
        return items.Where(item =>
        {
            string p = Normalize(path(item));
            return p == wanted || p.EndsWith("/" + wanted, StringComparison.Ordinal);
        }).ToList();

        static string Normalize(string p) => p.Replace('\\', '/');
    }

    /// <summary>Every linear layer with its indices filled in, or null when a list length or a layer's presence is unknown.</summary>
    private static List<ConcreteLayer>? Expand(EquatableArray<LayerSpec> layers, ModelConfigSpec? config)
    {
        var result = new List<(ConcreteLayer Layer, int Order, int[] Indices)>();
        int order = 0;
        foreach (var layer in layers)
        {
            if (layer.Presence == LayerPresence.UnlessTiedEmbeddings)
            {
                if (config == null) return null;
                if (config.TieWordEmbeddings) continue;
            }
            var counts = layer.ListCounts.Select(c => Resolve(c, config)).ToList();
            if (counts.Any(c => c == null)) return null;
            foreach (var (path, indices) in Paths(layer.Path, counts.Select(c => c!.Value).ToList()))
                result.Add((new ConcreteLayer(path, layer.Path, Resolve(layer.InFeatures, config), Resolve(layer.OutFeatures, config), layer.IsFloatLinear), order, indices));
            order++;
        }
        // Depth-first like the runtime's NamedModules: every layer of list element 0 comes before those of element 1.
        result.Sort((a, b) => CompareTreeOrder(a.Layer.Template, a.Order, a.Indices, b.Layer.Template, b.Order, b.Indices));
        return result.Select(r => r.Layer).ToList();
    }

    private static int CompareTreeOrder(string templateA, int orderA, int[] indicesA, string templateB, int orderB, int[] indicesB)
    {
        for (int k = 0; k < indicesA.Length && k < indicesB.Length; k++)
        {
            // Indices are comparable only while both paths run through the same list.
            if (ListPrefix(templateA, k) != ListPrefix(templateB, k)) break;
            if (indicesA[k] != indicesB[k]) return indicesA[k].CompareTo(indicesB[k]);
        }
        return orderA.CompareTo(orderB);
    }

    /// <summary>The part of <paramref name="template"/> before its <paramref name="list"/>-th "{i}" (the list's path plus ".").</summary>
    internal static string ListPrefix(string template, int list)
    {
        int at = -1;
        for (int k = 0; k <= list; k++) at = template.IndexOf("{i}", at + 1, StringComparison.Ordinal);
        return template.Substring(0, at);
    }

    private static IEnumerable<(string Path, int[] Indices)> Paths(string template, IReadOnlyList<int> counts)
    {
        var paths = new List<(string Path, int[] Indices)> { ("", Array.Empty<int>()) };
        var parts = template.Split(new[] { "{i}" }, StringSplitOptions.None);
        for (int p = 0; p < parts.Length; p++)
        {
            paths = paths.Select(s => (s.Path + parts[p], s.Indices)).ToList();
            if (p < counts.Count)
            {
                paths = paths.SelectMany(s => Enumerable.Range(0, counts[p]).Select(i =>
                    (s.Path + i.ToString(CultureInfo.InvariantCulture), s.Indices.Concat(new[] { i }).ToArray()))).ToList();
            }
        }
        return paths;
    }

    internal static int? Resolve(DimensionSpec dimension, ModelConfigSpec? config)
    {
        if (dimension.Value >= 1) return dimension.Value;
        if (config == null) return null;
        int? headDim = config.HeadDim ?? (config.HiddenSize / config.NumAttentionHeads);
        return dimension.FromConfig switch
        {
            ConfigDimension.HiddenSize => config.HiddenSize,
            ConfigDimension.IntermediateSize => config.IntermediateSize,
            ConfigDimension.QueryWidth => config.NumAttentionHeads * headDim,
            ConfigDimension.KeyValueWidth => (config.NumKeyValueHeads ?? config.NumAttentionHeads) * headDim,
            ConfigDimension.VocabSize => config.VocabSize,
            ConfigDimension.NumHiddenLayers => config.NumHiddenLayers,
            _ => null,
        };
    }
}

/// <summary>
/// A linear layer at a concrete path (model.layers.0.self_attn.q_proj) with the walked path template it comes from
/// (model.layers.{i}.self_attn.q_proj), its sizes where known, and whether QLoRA stores it in 4 bits.
/// </summary>
internal sealed record ConcreteLayer(string Path, string Template, int? InFeatures, int? OutFeatures, bool IsFloatLinear);

/// <summary>What a method's planner sees: the model, its config, and its concrete layers.</summary>
/// <param name="Model">The model.</param>
/// <param name="Config">The config.json <c>[ModelConfig]</c> names, or null.</param>
/// <param name="Layers">Every linear layer at its concrete path, in module order; null when a list length or a layer's presence is unknown.</param>
internal sealed record PlanContext(ModelSpec Model, ModelConfigSpec? Config, IReadOnlyList<ConcreteLayer>? Layers)
{
    /// <summary>A config.json size, or null when there is no config or it lacks the field.</summary>
    public int? Resolve(ConfigDimension dimension) => ModelPlanner.Resolve(DimensionSpec.Config(dimension), Config);

    /// <summary><see cref="TargetMatcher.Select"/> over <see cref="Layers"/>; null when they are unknown.</summary>
    public List<ConcreteLayer>? Select(TargetSpec targets, IEnumerable<string> exclude, EquatableArray<int>? indices) =>
        Layers == null ? null : TargetMatcher.Select(targets, exclude, indices, Layers);
}
