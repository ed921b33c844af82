using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PeftGen.Text;

/// <summary>
/// A pre-tokenization regex that classifies characters by code point, as the Rust regex engines behind Hugging Face
/// tokenizers do. .NET's engine sees UTF-16 code units, so a letter outside the BMP (CJK Extension B, mathematical
/// letters) would be two surrogates of category Cs and fail <c>\p{L}</c>. Texts with surrogates are therefore matched
/// on a stand-in string where each astral code point is one BMP character of the same Unicode category, and the
/// match positions are mapped back.
/// </summary>
internal sealed class UnicodeRegex
{
    /// <summary>For each <see cref="UnicodeCategory"/>, a non-ASCII BMP character of that category.</summary>
    private static readonly char[] StandIns = BuildStandIns();

    private readonly Regex _regex;

    /// <summary>Compiles <paramref name="pattern"/>; throws <see cref="ArgumentException"/> when .NET cannot parse it.</summary>
    public UnicodeRegex(string pattern)
    {
        _regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);
    }

    /// <summary>Appends the (start, length) of every match in <paramref name="text"/>, left to right.</summary>
    public void FindMatches(string text, List<(int Start, int Length)> matches)
    {
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            foreach (var match in _regex.EnumerateMatches(text))
            {
                matches.Add((match.Index, match.Length));
            }
            return;
        }

        // originalIndex[k] is where stand-in character k starts in the text; one extra entry marks the end.
        var standIn = new StringBuilder(text.Length);
        var originalIndex = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length;)
        {
            originalIndex.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var rune = new Rune(text[i], text[i + 1]);
                standIn.Append(StandIns[(int)Rune.GetUnicodeCategory(rune)]);
                i += 2;
            }
            else
            {
                standIn.Append(text[i]);
                i++;
            }
        }
        originalIndex.Add(text.Length);

        foreach (var match in _regex.EnumerateMatches(standIn.ToString()))
        {
            int start = originalIndex[match.Index];
            matches.Add((start, originalIndex[match.Index + match.Length] - start));
        }
    }

    private static char[] BuildStandIns()
    {
        var standIns = new char[32];
        var found = new bool[32];
        for (int c = 0x80; c <= 0xFFFF; c++)
        {
            if (c is >= 0xD800 and <= 0xDFFF)
            {
                continue;
            }
            int category = (int)CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (!found[category])
            {
                found[category] = true;
                standIns[category] = (char)c;
            }
        }
        // Astral code points are never surrogates; any category left unfound maps to an unassigned BMP character.
        for (int category = 0; category < standIns.Length; category++)
        {
            if (!found[category])
            {
                standIns[category] = '\u0378';
            }
        }
        return standIns;
    }
}
