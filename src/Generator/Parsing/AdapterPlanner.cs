using System;
using System.Collections.Generic;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// Resolves a model's adapters against its config.json: member overrides become rank/alpha patterns and exclusions,
/// and, when every size is known, the adapter plan is computed with the runtime's own target, exclusion, layer and
/// pattern rules, so it equals what <c>PeftModel.Plan()</c> reports after <c>ApplyAdapters()</c>.
/// </summary>
internal static class AdapterPlanner
{
    private static readonly TimeSpan RegexTimeout = TimeSpan.FromSeconds(1);

    public static GenerationSpec Plan(ModelSpec model, EquatableArray<ModelConfigSpec> configs)
    {
        var config = FindConfig(model.ModelConfigPath, configs);
        var concrete = Expand(model.Layers, config);
        if (model.Method is { } method) return new GenerationSpec(model, EquatableArray<AdapterOutputSpec>.Empty, PlanMethod(model, method, concrete, config));
        var prefixes = new HashSet<string>(StringComparer.Ordinal);
        var adapters = model.Adapters.Select(adapter =>
        {
            var (exclude, ranks, alphas) = Patterns(model, adapter, concrete);
            var spec = new AdapterOutputSpec(adapter, UniquePrefix(adapter.Name, prefixes), exclude, ranks, alphas, null);
            spec = spec with { Plan = concrete == null ? null : Rows(spec, concrete, model.Quantize != null) };
            return spec with { FileKeys = FileKeys(spec, model.Layers) };
        }).ToEquatableArray();
        return new GenerationSpec(model, adapters, Config: config);
    }

    /// <summary>The config file the [ModelConfig] path names: the one whose path equals it or ends with "/" + it.</summary>
    internal static ModelConfigSpec? FindConfig(string? path, EquatableArray<ModelConfigSpec> configs)
    {
        if (path == null) return null;
        string wanted = Normalize(path);
        if (wanted.StartsWith("./", StringComparison.Ordinal)) wanted = wanted.Substring(2);
        var matches = configs.Where(c =>
        {
            string p = Normalize(c.Path);
            return p == wanted || p.EndsWith("/" + wanted, StringComparison.Ordinal);
        }).ToList();
        return matches.Count == 1 ? matches[0] : null;

        static string Normalize(string p) => p.Replace('\\', '/');
    }

    private sealed record ConcreteLayer(string Path, string Template, int? InFeatures, int? OutFeatures, bool IsFloatLinear);

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

    private static string ListPrefix(string template, int list)
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
                    (s.Path + i.ToString(System.Globalization.CultureInfo.InvariantCulture), s.Indices.Concat(new[] { i }).ToArray()))).ToList();
            }
        }
        return paths;
    }

    private static int? Resolve(DimensionSpec dimension, ModelConfigSpec? config)
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

    /// <summary>
    /// The exclusions and rank/alpha patterns of one adapter. Patterns match like the runtime's (exact path or
    /// "." + suffix), so a layer inside a module list is keyed by its concrete paths when the list lengths are known,
    /// and otherwise by the part of its path after the last index (which every index shares). Overrides on narrower
    /// members come first, so they win over an override on an enclosing submodule.
    /// </summary>
    private static (EquatableArray<string>, EquatableArray<PatternEntrySpec>, EquatableArray<PatternEntrySpec>) Patterns(
        ModelSpec model, AdapterSpec adapter, List<ConcreteLayer>? concrete)
    {
        var exclude = new List<string>(adapter.Exclude);
        var ranks = new List<PatternEntrySpec>();
        var alphas = new List<PatternEntrySpec>();
        var overrides = model.Overrides
            .Where(o => o.Adapter == null || o.Adapter == adapter.Name)
            .OrderByDescending(o => o.Path.Length);
        foreach (var o in overrides)
        {
            foreach (var layer in model.Layers.Where(l => l.Path == o.Path || l.Path.StartsWith(o.Path + ".", StringComparison.Ordinal)))
            {
                var keys = concrete != null
                    ? concrete.Where(c => c.Template == layer.Path).Select(c => c.Path)
                    : new[] { SharedSuffix(layer.Path) };
                foreach (var key in keys)
                {
                    if (o.Exclude) Add(exclude, key);
                    if (o.Rank > 0 && !ranks.Any(r => r.Key == key)) ranks.Add(new PatternEntrySpec(key, o.Rank));
                    if (o.Alpha > 0 && !alphas.Any(a => a.Key == key)) alphas.Add(new PatternEntrySpec(key, o.Alpha));
                }
            }
        }
        return (exclude.ToEquatableArray(), ranks.ToEquatableArray(), alphas.ToEquatableArray());

        static void Add(List<string> list, string item)
        {
            if (!list.Contains(item)) list.Add(item);
        }
    }

    /// <summary>The plan rows, or null when a targeted shape is unknown or the runtime would reject the targets.</summary>
    private static EquatableArray<PlanRowSpec>? Rows(AdapterOutputSpec output, List<ConcreteLayer> layers, bool quantize)
    {
        var adapter = output.Adapter;
        if (adapter.Rank < 1) return null;
        var selected = Select(adapter.Targets, output.Exclude, adapter.Layers, layers);
        if (selected == null) return null;

        return selected.Select(l =>
        {
            int rank = output.RankPattern.Where(p => MatchesName(l.Path, p.Key)).Select(p => (int?)p.Value).FirstOrDefault() ?? adapter.Rank;
            float alpha = (float)(output.AlphaPattern.Where(p => MatchesName(l.Path, p.Key)).Select(p => (double?)p.Value).FirstOrDefault() ?? adapter.Alpha);
            // The runtime computes the scaling in float: alpha / r, or alpha / √r with rsLoRA.
            float scaling = adapter.UseRsLoRA ? alpha / (float)Math.Sqrt(rank) : alpha / rank;
            int inFeatures = l.InFeatures!.Value, outFeatures = l.OutFeatures!.Value;
            // LoRA-FA freezes A: only B [out, r] trains.
            long trainable = (adapter.UseLoRAFA ? (long)rank * outFeatures : (long)rank * (inFeatures + outFeatures)) + (adapter.UseDoRA ? outFeatures : 0);
            return new PlanRowSpec(l.Path, inFeatures, outFeatures, rank, alpha, scaling, quantize && l.IsFloatLinear, trainable);
        }).ToEquatableArray();
    }

    /// <summary>
    /// The layers <paramref name="targets"/> select, minus exclusions, within <paramref name="indices"/>' decoder layers, with
    /// the runtime's rules; null when a listed name matches nothing, the regex is invalid, nothing is selected or a
    /// selected shape is unknown.
    /// </summary>
    private static List<ConcreteLayer>? Select(TargetSpec targets, IEnumerable<string> exclude, EquatableArray<int>? indices, List<ConcreteLayer> layers)
    {
        var paths = layers.Select(l => l.Path).ToList();
        List<ConcreteLayer> selected;
        switch (targets.Kind)
        {
            case TargetKind.AllLinear:
                selected = layers.Where(l => !(l.Path == "lm_head" || l.Path.EndsWith(".lm_head", StringComparison.Ordinal))).ToList();
                break;
            case TargetKind.List:
                if (targets.Names.Any(n => !paths.Any(p => MatchesName(p, n)))) return null;
                selected = layers.Where(l => targets.Names.Any(n => MatchesName(l.Path, n))).ToList();
                break;
            case TargetKind.Regex:
                if (ToRegex(targets.Text) is not { } regex) return null;
                try
                {
                    selected = layers.Where(l => regex.IsMatch(l.Path)).ToList();
                }
                catch (RegexMatchTimeoutException)
                {
                    return null;
                }
                break;
            default:
                return null;
        }
        var excluded = exclude.ToList();
        selected = selected.Where(l => !excluded.Any(e => MatchesName(l.Path, e))).ToList();
        if (indices is { } only)
            selected = selected.Where(l => only.Any(i => l.Path.Contains("layers." + i.ToString(System.Globalization.CultureInfo.InvariantCulture) + "."))).ToList();
        if (selected.Count == 0 || selected.Any(l => l.InFeatures == null || l.OutFeatures == null)) return null;
        return selected;
    }

    private static Regex? ToRegex(string text)
    {
        try
        {
            return new Regex("^(?:" + text + ")$", RegexOptions.None, RegexTimeout);
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    /// <summary>
    /// The plan of a method other than LoRA, with each method's formula where every size is known: VeRA out + r per
    /// layer; IA3 in (feed-forward) or out channels per layer; prompt tuning n·hidden; prefix tuning layers·2·n·kv_dim
    /// (with projection: n·kv_dim + kv_dim·H + H + H·layers·2·kv_dim + layers·2·kv_dim); P-tuning n·hidden plus its
    /// three-layer MLP; bottleneck 2·d·m (+ d + m with biases) per site. Sparse fine-tuning depends on calibration.
    /// </summary>
    private static MethodPlanSpec PlanMethod(ModelSpec model, MethodSpec method, List<ConcreteLayer>? concrete, ModelConfigSpec? config)
    {
        switch (method)
        {
            case VeraSpec vera:
            {
                var layers = vera.Rank >= 1 && concrete != null ? Select(vera.Targets, vera.Exclude, vera.Layers, concrete) : null;
                var rows = layers?.Select(l => new MethodPlanRowSpec(l.Path, l.InFeatures!.Value, l.OutFeatures!.Value, vera.Rank,
                    model.Quantize != null && l.IsFloatLinear, (long)l.OutFeatures!.Value + vera.Rank)).ToEquatableArray();
                return new MethodPlanSpec(method, rows, rows?.Sum(r => r.TrainableParameters));
            }
            case IA3Spec ia3:
            {
                var layers = concrete != null ? Select(ia3.Targets, ia3.Exclude, null, concrete) : null;
                Regex? feedForwardRegex = ia3.FeedForward is { Kind: TargetKind.Regex } ffr ? ToRegex(ffr.Text) : null;
                if (ia3.FeedForward is { Kind: TargetKind.Regex } && feedForwardRegex == null) layers = null;
                var rows = layers?.Select(l =>
                {
                    bool ff = ia3.FeedForward is { } f && (f.Kind == TargetKind.AllLinear
                        || (f.Kind == TargetKind.List && f.Names.Any(n => MatchesName(l.Path, n)))
                        || (feedForwardRegex != null && feedForwardRegex.IsMatch(l.Path)));
                    return new MethodPlanRowSpec(l.Path, l.InFeatures!.Value, l.OutFeatures!.Value, 0, ff, ff ? l.InFeatures!.Value : l.OutFeatures!.Value);
                }).ToEquatableArray();
                return new MethodPlanSpec(method, rows, rows?.Sum(r => r.TrainableParameters));
            }
            case PromptSpec prompt:
                return new MethodPlanSpec(method, null, model.IsLlama ? PromptParameters(prompt, config) : null);
            case BottleneckSpec bottleneck:
            {
                var rows = model.IsLlama ? BottleneckSites(bottleneck, config) : null;
                return new MethodPlanSpec(method, rows, rows?.Sum(r => r.TrainableParameters));
            }
            default:
                return new MethodPlanSpec(method, null, null);
        }
    }

    private static long? PromptParameters(PromptSpec prompt, ModelConfigSpec? config)
    {
        int? hidden = Resolve(DimensionSpec.Config(ConfigDimension.HiddenSize), config);
        int? kvDim = Resolve(DimensionSpec.Config(ConfigDimension.KeyValueWidth), config);
        int? layers = Resolve(DimensionSpec.Config(ConfigDimension.NumHiddenLayers), config);
        long n = prompt.VirtualTokens;
        if (hidden is not int d || kvDim is not int kv || layers is not int l || n < 1) return null;
        switch (prompt.Kind)
        {
            case PeftMethod.PromptTuning:
                return n * d;                                                       // embedding [n, hidden]
            case PeftMethod.PrefixTuning:
            {
                long output = (long)l * 2 * kv;
                if (!prompt.Projection) return n * output;                          // table [n, layers · 2 · kv_dim]
                long h = prompt.EncoderHiddenSize > 0 ? prompt.EncoderHiddenSize : kv;
                return n * kv + (kv * h + h) + (h * output + output);               // embedding [n, kv_dim] + MLP
            }
            case PeftMethod.PTuning:
            {
                long h = prompt.EncoderHiddenSize > 0 ? prompt.EncoderHiddenSize : d;
                return n * d + (d * h + h) + (h * h + h) + (h * d + d);             // embedding [n, hidden] + MLP
            }
            default:
                return null;
        }
    }

    private static EquatableArray<MethodPlanRowSpec>? BottleneckSites(BottleneckSpec bottleneck, ModelConfigSpec? config)
    {
        if (Resolve(DimensionSpec.Config(ConfigDimension.HiddenSize), config) is not int d
            || Resolve(DimensionSpec.Config(ConfigDimension.NumHiddenLayers), config) is not int layers) return null;
        int m = bottleneck.Size > 0 ? bottleneck.Size : bottleneck.ReductionFactor >= 1 ? d / bottleneck.ReductionFactor : 0;
        if (m < 1 || m > d || bottleneck.Layers is { } only && only.Any(i => i < 0 || i >= layers)) return null;
        long perSite = 2L * d * m + (bottleneck.Bias ? d + m : 0);
        // BottleneckPlacement: Attention = 0, Mlp = 1, Both = 2.
        long placement = bottleneck.Placement.Value;
        var rows = new List<MethodPlanRowSpec>();
        for (int i = 0; i < layers; i++)
        {
            if (bottleneck.Layers is { } selected && !selected.Contains(i)) continue;
            string prefix = "model.layers." + i.ToString(System.Globalization.CultureInfo.InvariantCulture) + ".";
            if (placement is 0 or 2) rows.Add(new MethodPlanRowSpec(prefix + "attn_adapter", d, d, m, false, perSite));
            if (placement is 1 or 2) rows.Add(new MethodPlanRowSpec(prefix + "mlp_adapter", d, d, m, false, perSite));
        }
        return rows.ToEquatableArray();
    }

    /// <summary>PEFT's file key prefix: PeftModel wraps the model as "base_model", LoraModel keeps it as "model".</summary>
    internal const string FileKeyPrefix = "base_model.model.";

    /// <summary>
    /// The adapter's keys in a PEFT weights file: those of the plan's rows when it is known; otherwise, for list and
    /// all-linear targets, the path templates ("{i}" per list index) of the layers they may select, minus exclusions
    /// that match a template whole; null for a regex over layers only known at run time.
    /// </summary>
    private static EquatableArray<string>? FileKeys(AdapterOutputSpec output, EquatableArray<LayerSpec> layers)
    {
        IEnumerable<string> paths;
        if (output.Plan is { } plan) paths = plan.Select(r => r.Path);
        else if (output.Adapter.Targets.Kind == TargetKind.AllLinear)
            paths = layers.Select(l => l.Path).Where(p => !(p == "lm_head" || p.EndsWith(".lm_head", StringComparison.Ordinal)));
        else if (output.Adapter.Targets.Kind == TargetKind.List)
            paths = layers.Select(l => l.Path).Where(p => output.Adapter.Targets.Names.Any(n => MayMatchName(p, n)));
        else
            return null;
        if (output.Plan == null) paths = paths.Where(p => !output.Exclude.Any(e => MatchesName(p, e)));
        return paths.SelectMany(p => output.Adapter.UseDoRA
                ? new[] { FileKeyPrefix + p + ".lora_A.weight", FileKeyPrefix + p + ".lora_B.weight", FileKeyPrefix + p + ".lora_magnitude_vector" }
                : new[] { FileKeyPrefix + p + ".lora_A.weight", FileKeyPrefix + p + ".lora_B.weight" })
            .ToEquatableArray();
    }

    /// <summary>Whether target name <paramref name="name"/> may match a layer of path template <paramref name="template"/> (a "{i}" segment matches any index).</summary>
    private static bool MayMatchName(string template, string name)
    {
        var path = template.Split('.');
        var parts = name.Split('.');
        if (parts.Length > path.Length) return false;
        for (int k = 1; k <= parts.Length; k++)
        {
            string segment = path[path.Length - k], part = parts[parts.Length - k];
            bool same = segment == "{i}" ? part.Length > 0 && part.All(c => c >= '0' && c <= '9') : segment == part;
            if (!same) return false;
        }
        return true;
    }

    private static string SharedSuffix(string template)
    {
        int last = template.LastIndexOf("{i}.", StringComparison.Ordinal);
        return last < 0 ? template : template.Substring(last + "{i}.".Length);
    }

    private static bool MatchesName(string path, string name) =>
        path == name || path.EndsWith("." + name, StringComparison.Ordinal);

    /// <summary>"" for the adapter named "default"; otherwise the name as a PascalCase identifier, unique in the class.</summary>
    private static string UniquePrefix(string name, HashSet<string> taken)
    {
        string prefix = name == "default" ? "" : Pascal(name);
        string candidate = prefix;
        for (int n = 2; !taken.Add(candidate); n++) candidate = prefix + n.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return candidate;
    }

    private static string Pascal(string name)
    {
        var sb = new StringBuilder();
        bool upper = true;
        foreach (char c in name)
        {
            if (!char.IsLetterOrDigit(c))
            {
                upper = true;
                continue;
            }
            sb.Append(upper ? char.ToUpperInvariant(c) : c);
            upper = false;
        }
        if (sb.Length == 0 || char.IsDigit(sb[0])) sb.Insert(0, "Adapter");
        return sb.ToString();
    }
}
