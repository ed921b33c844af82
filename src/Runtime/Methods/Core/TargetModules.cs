using System.Text.RegularExpressions;
using PeftGen.Models.Llama;
using PeftGen.Nn;

namespace PeftGen.Methods;

/// <summary>
/// Which layers an adapter targets, with PEFT's rules: a list matches a module whose path equals an entry or
/// ends with "." + entry; a regular expression must match the whole path; "all-linear" is every linear layer
/// except the output head. Unlike PEFT, a list entry that matches nothing is an error, not silence.
/// </summary>
public sealed record TargetModules
{
    private TargetModules(IReadOnlyList<string> names, string? pattern, bool allLinear)
    {
        Names = names;
        Pattern = pattern;
        IsAllLinear = allLinear;
    }

    /// <summary>Listed names (exact path or suffix), empty for a regex or all-linear.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The full-match regular expression, or null.</summary>
    public string? Pattern { get; }

    /// <summary>True for "all-linear".</summary>
    public bool IsAllLinear { get; }

    /// <summary>Exact names or suffixes, e.g. "q_proj", "v_proj".</summary>
    public static TargetModules List(params string[] names)
    {
        ArgumentNullException.ThrowIfNull(names);
        var cleaned = names.Select(n => n.Trim()).Where(n => n.Length > 0).Distinct(StringComparer.Ordinal).ToArray();
        if (cleaned.Length == 0) throw new ArgumentException("The target list is empty: name at least one layer, e.g. \"q_proj,v_proj\", or use \"all-linear\".", nameof(names));
        return new(cleaned, null, false);
    }

    /// <summary>A regular expression that must match the whole module path.</summary>
    public static TargetModules Regex(string pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        try
        {
            _ = new Regex(pattern);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"Target regex '{pattern}' is invalid: {e.Message}", nameof(pattern), e);
        }
        return new([], pattern, false);
    }

    /// <summary>Every linear layer except the output head (lm_head).</summary>
    public static TargetModules AllLinear { get; } = new([], null, true);

    /// <summary>
    /// Reads the DSL's string form: "all-linear"; a comma-separated list ("q_proj,v_proj"); or, when the text holds
    /// regex syntax (any of ^ $ ( ) [ ] * + ? | \), a regular expression.
    /// </summary>
    public static TargetModules Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim();
        if (t.Equals("all-linear", StringComparison.OrdinalIgnoreCase)) return AllLinear;
        if (t.IndexOfAny(['^', '$', '(', ')', '[', ']', '*', '+', '?', '|', '\\']) >= 0) return Regex(t);
        return List(t.Split(','));
    }

    /// <summary>True when the module at <paramref name="path"/> is targeted.</summary>
    public bool Matches(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (IsAllLinear) return !IsOutputHead(path);
        if (Pattern != null) return System.Text.RegularExpressions.Regex.IsMatch(path, "^(?:" + Pattern + ")$");
        return Names.Any(n => MatchesName(path, n));
    }

    internal static bool MatchesName(string path, string name) =>
        path == name || path.EndsWith("." + name, StringComparison.Ordinal);

    /// <summary>
    /// PEFT's layer selection: <paramref name="targets"/> match <paramref name="path"/>, no name in
    /// <paramref name="exclude"/> does, and the layer filter (indices of "layers.&lt;i&gt;.") keeps it.
    /// </summary>
    internal static bool Selects(TargetModules targets, IReadOnlyList<string> exclude, IReadOnlyList<int>? layers, string path) =>
        targets.Matches(path)
        && !exclude.Any(e => MatchesName(path, e))
        && (layers is null || layers.Any(i => path.Contains($"layers.{i}.", StringComparison.Ordinal)));

    internal static bool IsOutputHead(string path) => LlamaForCausalLM.IsOutputHead(path);

    /// <summary>The paths of <paramref name="model"/>'s linear layers, in module order, leaving out those inside adapted layers.</summary>
    internal static List<string> LinearPaths(Module model) =>
        model.NamedModules().Where(m => m.Module is LinearBase && !IsInsideAdapter(m.Path)).Select(m => m.Path).ToList();

    /// <summary>Whether <paramref name="path"/> lies inside an adapted layer (its "base_layer" or a LoRA factor), not a layer of the model.</summary>
    internal static bool IsInsideAdapter(string path) =>
        path.Contains(".lora_A.", StringComparison.Ordinal) || path.Contains(".lora_B.", StringComparison.Ordinal) || path.EndsWith(".base_layer", StringComparison.Ordinal);

    /// <summary>
    /// The paths among <paramref name="linears"/> (a model's linear layers, in module order) that <paramref name="targets"/>
    /// select and neither <paramref name="exclude"/> nor the layer filter <paramref name="layers"/> drops, with an error for
    /// a listed target that matches nothing (naming close layer names), a regex that matches nothing, or a selection left empty.
    /// </summary>
    /// <exception cref="ArgumentException">The selection fails, as described (the parameter named is "config").</exception>
    internal static List<string> Resolve(TargetModules targets, IReadOnlyList<string> exclude, IReadOnlyList<int>? layers, IReadOnlyList<string> linears)
    {
        var selected = linears.Where(targets.Matches).ToList();
        foreach (var name in targets.Names)
            if (!linears.Any(p => MatchesName(p, name)))
                throw new ArgumentException(UnknownName("Target", name, linears), "config");
        if (targets.Pattern != null && selected.Count == 0)
            throw new ArgumentException($"Target regex '{targets.Pattern}' matches no linear layer. Layer paths look like '{linears.FirstOrDefault()}'.", "config");
        selected = selected.Where(p => !exclude.Any(e => MatchesName(p, e))).ToList();
        if (layers is { } indices)
            selected = selected.Where(p => indices.Any(i => p.Contains($"layers.{i}.", StringComparison.Ordinal))).ToList();
        if (selected.Count == 0) throw new ArgumentException($"The targets '{targets}' leave no layer to adapt after exclusions and layer filters.", "config");
        return selected;
    }

    /// <summary>"<paramref name="what"/> '<paramref name="name"/>' matches no linear layer", with the closest layer name when one is near and the names there are.</summary>
    internal static string UnknownName(string what, string name, IReadOnlyList<string> linears)
    {
        var leafNames = linears.Select(p => p[(p.LastIndexOf('.') + 1)..]).Distinct().ToList();
        var closest = Generator.Planning.Suggestions.Closest(name, leafNames);
        var hint = closest != null ? $" Did you mean '{closest}'?" : "";
        return $"{what} '{name}' matches no linear layer.{hint} Linear layers here: {string.Join(", ", leafNames)}.";
    }

    /// <inheritdoc />
    public override string ToString() => IsAllLinear ? "all-linear" : Pattern ?? string.Join(",", Names);
}
