using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text.RegularExpressions;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Planning;

/// <summary>
/// The runtime's target rules (<c>TargetModules</c>, <c>PeftModel</c>), once for the generator and the analyzers: how a
/// targets string reads, and which layer paths it selects. A list entry matches a path equal to it or ending with "." +
/// it; a regex must match the whole path; "all-linear" is every linear layer but the output head. Paths may be
/// templates, where "{i}" stands for any module-list index.
/// </summary>
internal static class TargetMatcher
{
    private static readonly char[] RegexCharacters = { '^', '$', '(', ')', '[', ']', '*', '+', '?', '|', '\\' };
    private static readonly TimeSpan RegexTimeout = TimeSpan.FromSeconds(1);

    /// <summary>Reads a targets string exactly as the runtime's <c>TargetModules.Parse</c> does.</summary>
    public static TargetSpec Parse(string? text)
    {
        var trimmed = (text ?? "").Trim();
        if (string.Equals(trimmed, "all-linear", StringComparison.OrdinalIgnoreCase))
            return new TargetSpec(TargetKind.AllLinear, trimmed, EquatableArray<string>.Empty);
        if (trimmed.IndexOfAny(RegexCharacters) >= 0)
            return new TargetSpec(TargetKind.Regex, trimmed, EquatableArray<string>.Empty);
        var names = SplitList(trimmed);
        return names.Count == 0
            ? new TargetSpec(TargetKind.Invalid, text ?? "", EquatableArray<string>.Empty)
            : new TargetSpec(TargetKind.List, trimmed, names);
    }

    /// <summary>Comma-separated names, trimmed, without empties or repeats, in first-seen order.</summary>
    public static EquatableArray<string> SplitList(string? text) =>
        (text ?? "").Split(',').Select(n => n.Trim()).Where(n => n.Length > 0).Distinct(StringComparer.Ordinal).ToEquatableArray();

    /// <summary>Whether list entry <paramref name="name"/> matches the concrete <paramref name="path"/>: equal, or a "." suffix.</summary>
    public static bool MatchesName(string path, string name) =>
        path == name || path.EndsWith("." + name, StringComparison.Ordinal);

    /// <summary>
    /// Whether list entry <paramref name="name"/> matches some concrete path of <paramref name="template"/>: the path
    /// equals it or ends with "." + it, where each "{i}" of the template stands for any index.
    /// </summary>
    public static bool MayMatchName(string template, string name)
    {
        var path = template.Split('.');
        var parts = name.Split('.');
        if (parts.Length > path.Length) return false;
        for (int k = 1; k <= parts.Length; k++)
        {
            if (!SameSegment(path[path.Length - k], parts[parts.Length - k])) return false;
        }
        return true;
    }

    /// <summary>Whether member template <paramref name="member"/> is the concrete <paramref name="path"/> or one of its ancestors.</summary>
    public static bool Covers(string member, string path)
    {
        var memberSegments = member.Split('.');
        var pathSegments = path.Split('.');
        if (memberSegments.Length > pathSegments.Length) return false;
        for (int k = 0; k < memberSegments.Length; k++)
        {
            if (!SameSegment(memberSegments[k], pathSegments[k])) return false;
        }
        return true;
    }

    // A template segment "{i}" matches any index (digits); any other segment matches itself.
    private static bool SameSegment(string template, string concrete) =>
        template == "{i}" ? concrete.Length > 0 && concrete.All(c => c >= '0' && c <= '9') : template == concrete;

    /// <summary>The output head, which "all-linear" leaves out.</summary>
    public static bool IsOutputHead(string path) => path == "lm_head" || path.EndsWith(".lm_head", StringComparison.Ordinal);

    /// <summary>
    /// Whether <paramref name="targets"/> may adapt the layer at <paramref name="template"/>. A regex is taken to match,
    /// since which indices it selects is not known from a template; callers only use this to rule layers out.
    /// </summary>
    public static bool MayTarget(TargetSpec targets, string template) => targets.Kind switch
    {
        TargetKind.AllLinear => !IsOutputHead(template),
        TargetKind.List => targets.Names.Any(n => MayMatchName(template, n)),
        _ => true,
    };

    /// <summary>The regex of a targets string as the runtime runs it (a full match, with a timeout), or null when it is invalid.</summary>
    public static Regex? ToRegex(string text)
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
    /// The layers <paramref name="targets"/> select, minus exclusions, within <paramref name="indices"/>' decoder layers, with
    /// the runtime's rules; null when a listed name matches nothing, the regex is invalid, nothing is selected or a
    /// selected shape is unknown.
    /// </summary>
    public static List<ConcreteLayer>? Select(TargetSpec targets, IEnumerable<string> exclude, EquatableArray<int>? indices, IReadOnlyList<ConcreteLayer> layers)
    {
        List<ConcreteLayer> selected;
        switch (targets.Kind)
        {
            case TargetKind.AllLinear:
                selected = layers.Where(l => !IsOutputHead(l.Path)).ToList();
                break;
            case TargetKind.List:
                if (targets.Names.Any(n => !layers.Any(l => MatchesName(l.Path, n)))) return null;
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
            selected = selected.Where(l => only.Any(i => l.Path.Contains("layers." + i.ToString(CultureInfo.InvariantCulture) + "."))).ToList();
        if (selected.Count == 0 || selected.Any(l => l.InFeatures == null || l.OutFeatures == null)) return null;
        return selected;
    }
}
