using System;
using System.Collections.Generic;
using System.Linq;

namespace PeftGen.Generator.Planning;

/// <summary>"Did you mean": the runtime's rule for suggesting a known name in place of a mistyped one.</summary>
internal static class Suggestions
{
    /// <summary>
    /// The candidate closest to <paramref name="name"/> by edit distance, when close enough to be a typo: at most
    /// max(2, length / 3) edits away; the first of equally close candidates.
    /// </summary>
    public static string? Closest(string name, IEnumerable<string> candidates)
    {
        var closest = candidates.OrderBy(c => EditDistance(c, name)).FirstOrDefault();
        return closest != null && EditDistance(closest, name) <= Math.Max(2, name.Length / 3) ? closest : null;
    }

    /// <summary>The Levenshtein distance: single-character insertions, deletions and substitutions.</summary>
    public static int EditDistance(string a, string b)
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
}
