using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Text;
using PeftGen.Generator.Spec;

namespace PeftGen.Analyzers;

/// <summary>The runtime's target rules (<c>TargetModules</c>, <c>PeftModel</c>) applied to path templates.</summary>
internal static class TargetNames
{
    /// <summary>
    /// True when list entry <paramref name="name"/> matches some concrete path of <paramref name="template"/>: the
    /// path equals it or ends with "." + it, where each "{i}" of the template stands for any index.
    /// </summary>
    public static bool Matches(string template, string name)
    {
        var path = template.Split('.');
        var wanted = name.Split('.');
        if (wanted.Length > path.Length) return false;
        for (int k = 1; k <= wanted.Length; k++)
        {
            string segment = path[path.Length - k], entry = wanted[wanted.Length - k];
            bool same = segment == "{i}" ? entry.Length > 0 && entry.All(c => c >= '0' && c <= '9') : segment == entry;
            if (!same) return false;
        }
        return true;
    }

    /// <summary>The output head, which "all-linear" leaves out.</summary>
    public static bool IsOutputHead(string path) => path == "lm_head" || path.EndsWith(".lm_head", StringComparison.Ordinal);

    /// <summary>
    /// Whether <paramref name="targets"/> adapts the layer at <paramref name="template"/>. A regex is taken to match,
    /// since which indices it selects is not known from a template; callers only use this to rule layers out.
    /// </summary>
    public static bool MayTarget(TargetSpec targets, string template) => targets.Kind switch
    {
        TargetKind.AllLinear => !IsOutputHead(template),
        TargetKind.List => targets.Names.Any(n => Matches(template, n)),
        _ => true,
    };

    /// <summary>
    /// The layer name closest to <paramref name="name"/> by edit distance, when close enough to be a typo: the
    /// runtime's "Did you mean" rule (distance at most max(2, length / 3)).
    /// </summary>
    public static string? Closest(string name, IEnumerable<string> candidates)
    {
        var closest = candidates.OrderBy(c => Levenshtein(c, name)).FirstOrDefault();
        return closest != null && Levenshtein(closest, name) <= Math.Max(2, name.Length / 3) ? closest : null;
    }

    public static string LeafName(string path) => path.Substring(path.LastIndexOf('.') + 1);

    private static int Levenshtein(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (int i = 1; i <= a.Length; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
    }

    /// <summary>
    /// The location of list entry <paramref name="name"/> inside the targets expression, when the expression is a
    /// string literal whose characters map one to one onto its value (no escapes); otherwise null.
    /// </summary>
    public static Location? EntryLocation(ExpressionSyntax? expression, string name)
    {
        if (expression is not LiteralExpressionSyntax { Token: var token } || !token.IsKind(SyntaxKind.StringLiteralToken)) return null;
        string value = token.ValueText, text = token.Text;
        int opening = text.StartsWith("@\"", StringComparison.Ordinal) ? 2 : text.StartsWith("\"", StringComparison.Ordinal) ? 1 : -1;
        if (opening < 0 || text.Length != value.Length + opening + 1) return null;
        int start = 0;
        foreach (var part in value.Split(','))
        {
            string trimmed = part.Trim();
            if (trimmed == name)
            {
                int at = start + part.IndexOf(trimmed, StringComparison.Ordinal);
                return Location.Create(expression.SyntaxTree, new TextSpan(token.SpanStart + opening + at, name.Length));
            }
            start += part.Length + 1;
        }
        return null;
    }
}
