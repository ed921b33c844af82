using System.Text.RegularExpressions;

namespace PeftGen.Adapters;

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

    internal static bool IsOutputHead(string path) => path == "lm_head" || path.EndsWith(".lm_head", StringComparison.Ordinal);

    /// <inheritdoc />
    public override string ToString() => IsAllLinear ? "all-linear" : Pattern ?? string.Join(",", Names);
}
