using System;
using System.Linq;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>Reads a targets string exactly as the runtime's <c>TargetModules.Parse</c> does.</summary>
internal static class TargetParser
{
    private static readonly char[] RegexCharacters = { '^', '$', '(', ')', '[', ']', '*', '+', '?', '|', '\\' };

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
}
