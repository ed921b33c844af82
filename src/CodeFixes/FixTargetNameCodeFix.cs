using System.Globalization;
using Microsoft.CodeAnalysis.Text;

namespace PeftGen.CodeFixes;

/// <summary>
/// Fixes PEFT006 by replacing a misspelled entry of a LoRA targets list with the closest layer name the analyzer found,
/// leaving the other entries, the spacing and the quoting exactly as written.
/// </summary>
[ExportCodeFixProvider(LanguageNames.CSharp, Name = nameof(FixTargetNameCodeFix))]
[Shared]
public sealed class FixTargetNameCodeFix() : PeftCodeFix<(string Target, TextChange Change)>(DiagnosticCatalog.UnknownTarget, EquivalenceKey)
{
    /// <summary>Identifies this fix's actions, so that fix-all groups them.</summary>
    public const string EquivalenceKey = "PeftGen.FixTargetName";

    /// <summary>Property key under which the analyzer may pass the misspelled target; the message is parsed otherwise.</summary>
    public const string TargetProperty = "Target";

    /// <summary>The misspelled entry of the targets literal and the edit that puts the analyzer's suggestion in its place.</summary>
    private protected override bool TryFind(SyntaxNode root, Diagnostic diagnostic, out (string Target, TextChange Change) fix)
    {
        fix = default;
        if (!diagnostic.Properties.TryGetValue(DiagnosticCatalog.SuggestionProperty, out var suggestion) || string.IsNullOrEmpty(suggestion)
            || MisspelledTarget(diagnostic) is not { } target)
            return false;
        var literal = root.FindToken(diagnostic.Location.SourceSpan.Start);
        if (!literal.IsKind(SyntaxKind.StringLiteralToken) || FindEntry(literal, target, diagnostic.Location.SourceSpan) is not { } entry)
            return false;
        fix = (target, new TextChange(entry, suggestion!));
        return true;
    }

    private protected override string Title((string Target, TextChange Change) fix) => $"Change target '{fix.Target}' to '{fix.Change.NewText}'";

    private protected override async Task<Document> ApplyAsync(Document document, (string Target, TextChange Change) fix, CancellationToken cancellationToken)
    {
        // A text edit of the name alone, not a new literal: fix-all can then merge several fixes to one list.
        var text = await document.GetTextAsync(cancellationToken).ConfigureAwait(false);
        return document.WithText(text.WithChanges(fix.Change));
    }

    /// <summary>The target as the analyzer saw it: its own property when present, else the first quoted name of the message.</summary>
    private static string? MisspelledTarget(Diagnostic diagnostic)
    {
        if (diagnostic.Properties.TryGetValue(TargetProperty, out var target) && !string.IsNullOrEmpty(target))
            return target;

        var message = diagnostic.GetMessage(CultureInfo.InvariantCulture);
        var open = message.IndexOf('\'');
        var close = open < 0 ? -1 : message.IndexOf('\'', open + 1);
        return close > open + 1 ? message.Substring(open + 1, close - open - 1) : null;
    }

    /// <summary>
    /// The source span of the list entry naming <paramref name="target"/>, without the spaces around it. The analyzer
    /// points at the entry itself where it can and at the whole literal otherwise; the entry the diagnostic covers wins,
    /// as a name may be listed twice, else the first entry of that name.
    /// </summary>
    private static TextSpan? FindEntry(SyntaxToken literal, string target, TextSpan reported)
    {
        // Entries are compared in the token's source text, so the edit leaves quoting and escapes untouched; a name
        // written with escapes never matches and gets no fix rather than a rewritten literal.
        var text = literal.Text;
        var contentStart = text.IndexOf('"') + 1;
        var contentEnd = text.LastIndexOf('"');
        TextSpan? first = null;
        var start = contentStart;
        while (start <= contentEnd)
        {
            var comma = text.IndexOf(',', start, contentEnd - start);
            var end = comma < 0 ? contentEnd : comma;
            var nameStart = start;
            var nameEnd = end;
            while (nameStart < nameEnd && char.IsWhiteSpace(text[nameStart]))
                nameStart++;
            while (nameEnd > nameStart && char.IsWhiteSpace(text[nameEnd - 1]))
                nameEnd--;

            if (text.Substring(nameStart, nameEnd - nameStart) == target)
            {
                var span = TextSpan.FromBounds(literal.SpanStart + nameStart, literal.SpanStart + nameEnd);
                if (span.Contains(reported))
                    return span;
                first ??= span;
            }

            start = end + 1;
        }

        return first;
    }
}
