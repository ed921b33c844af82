using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary>
/// LoRA's planner: member overrides become rank/alpha patterns and exclusions, and, when every size is known, the
/// adapter plan is computed with the runtime's own target, exclusion, layer and pattern rules, so it equals what
/// <c>PeftModel.Plan()</c> reports after <c>ApplyAdapters()</c>.
/// </summary>
internal sealed partial class LoRAMethod
{
    /// <summary>PEFT's file key prefix: PeftModel wraps the model as "base_model", LoraModel keeps it as "model".</summary>
    internal const string FileKeyPrefix = "base_model.model.";

    protected override LoRAPlan Plan(LoRASpec method, PlanContext context)
    {
        var model = context.Model;
        var prefixes = new HashSet<string>(StringComparer.Ordinal);
        return new LoRAPlan(method.Adapters.Select(adapter =>
        {
            var (exclude, ranks, alphas) = Patterns(model, adapter, context.Layers);
            var spec = new AdapterOutputSpec(adapter, UniquePrefix(adapter.Name, prefixes), exclude, ranks, alphas, null);
            spec = spec with { Plan = context.Layers == null ? null : Rows(spec, context.Layers, model.Companions.Quantize != null) };
            return spec with { FileKeys = FileKeys(spec, model.Layers) };
        }).ToEquatableArray());
    }

    /// <summary>
    /// The exclusions and rank/alpha patterns of one adapter. Patterns match like the runtime's (exact path or
    /// "." + suffix), so a layer inside a module list is keyed by its concrete paths when the list lengths are known,
    /// and otherwise by the part of its path after the last index (which every index shares). Overrides on narrower
    /// members come first, so they win over an override on an enclosing submodule.
    /// </summary>
    private static (EquatableArray<string>, EquatableArray<PatternEntrySpec>, EquatableArray<PatternEntrySpec>) Patterns(
        ModelSpec model, AdapterSpec adapter, IReadOnlyList<ConcreteLayer>? concrete)
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
                    if (o.Exclude && !exclude.Contains(key)) exclude.Add(key);
                    if (o.Rank > 0 && !ranks.Any(r => r.Key == key)) ranks.Add(new PatternEntrySpec(key, o.Rank));
                    if (o.Alpha > 0 && !alphas.Any(a => a.Key == key)) alphas.Add(new PatternEntrySpec(key, o.Alpha));
                }
            }
        }
        return (exclude.ToEquatableArray(), ranks.ToEquatableArray(), alphas.ToEquatableArray());
    }

    /// <summary>The plan rows, or null when a targeted shape is unknown or the runtime would reject the targets.</summary>
    private static EquatableArray<LoRARow>? Rows(AdapterOutputSpec output, IReadOnlyList<ConcreteLayer> layers, bool quantize)
    {
        var adapter = output.Adapter;
        if (adapter.Rank < 1) return null;
        var selected = TargetMatcher.Select(adapter.Targets, output.Exclude, adapter.Layers, layers);
        if (selected == null) return null;

        return selected.Select(l =>
        {
            int rank = output.RankPattern.Where(p => TargetMatcher.MatchesName(l.Path, p.Key)).Select(p => (int?)p.Value).FirstOrDefault() ?? adapter.Rank;
            float alpha = (float)(output.AlphaPattern.Where(p => TargetMatcher.MatchesName(l.Path, p.Key)).Select(p => (double?)p.Value).FirstOrDefault() ?? adapter.Alpha);
            // The runtime computes the scaling in float: alpha / r, or alpha / √r with rsLoRA.
            float scaling = adapter.UseRsLoRA ? alpha / (float)Math.Sqrt(rank) : alpha / rank;
            int inFeatures = l.InFeatures!.Value, outFeatures = l.OutFeatures!.Value;
            // LoRA-FA freezes A: only B [out, r] trains.
            long trainable = (adapter.UseLoRAFA ? (long)rank * outFeatures : (long)rank * (inFeatures + outFeatures)) + (adapter.UseDoRA ? outFeatures : 0);
            return new LoRARow(l.Path, inFeatures, outFeatures, rank, alpha, scaling, quantize && l.IsFloatLinear, trainable);
        }).ToEquatableArray();
    }

    /// <summary>
    /// The adapter's keys in a PEFT weights file: those of the plan's rows when it is known; otherwise, for list and
    /// all-linear targets, the path templates ("{i}" per list index) of the layers they may select, minus exclusions
    /// that match a template whole; null for a regex over layers only known at run time.
    /// </summary>
    private static EquatableArray<string>? FileKeys(AdapterOutputSpec output, EquatableArray<LayerSpec> layers)
    {
        IEnumerable<string> paths;
        var targets = output.Adapter.Targets;
        if (output.Plan is { } plan) paths = plan.Select(r => r.Path);
        else if (targets.Kind is TargetKind.AllLinear or TargetKind.List)
            paths = layers.Select(l => l.Path).Where(p => TargetMatcher.MayTarget(targets, p));
        else
            return null;
        if (output.Plan == null) paths = paths.Where(p => !output.Exclude.Any(e => TargetMatcher.MatchesName(p, e)));
        var suffixes = output.Adapter.UseDoRA
            ? new[] { ".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector" }
            : new[] { ".lora_A.weight", ".lora_B.weight" };
        return paths.SelectMany(p => suffixes.Select(s => FileKeyPrefix + p + s)).ToEquatableArray();
    }

    private static string SharedSuffix(string template)
    {
        int last = template.LastIndexOf("{i}.", StringComparison.Ordinal);
        return last < 0 ? template : template.Substring(last + "{i}.".Length);
    }

    /// <summary>"" for the adapter named "default"; otherwise the name as a PascalCase identifier, unique in the class.</summary>
    private static string UniquePrefix(string name, HashSet<string> taken)
    {
        string prefix = name == DefaultAdapterName ? "" : Pascal(name);
        string candidate = prefix;
        for (int n = 2; !taken.Add(candidate); n++) candidate = prefix + n.ToString(CultureInfo.InvariantCulture);
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
