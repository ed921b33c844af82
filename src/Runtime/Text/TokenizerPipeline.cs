using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace PeftGen.Text;

/// <summary>One pre-token; <paramref name="AtTextStart"/> when it begins at offset 0 of the whole input.</summary>
internal readonly record struct PreToken(string Text, bool AtTextStart);

/// <summary>A <c>normalizer</c> of <c>tokenizer.json</c>, applied to each stretch of text between added tokens.</summary>
internal abstract class Normalizer
{
    public abstract string Normalize(string text);
}

/// <summary>A <c>pre_tokenizer</c> of <c>tokenizer.json</c>: splits (and may rewrite) pre-tokens.</summary>
internal abstract class PreTokenizer
{
    public abstract void PreTokenize(List<PreToken> tokens);
}

/// <summary>A <c>decoder</c> of <c>tokenizer.json</c>: rewrites the list of token strings, as Hugging Face's <c>decode_chain</c>.</summary>
internal abstract class TokenDecoder
{
    public abstract List<string> Decode(List<string> tokens);
}

internal sealed class SequenceNormalizer(Normalizer[] steps) : Normalizer
{
    public override string Normalize(string text)
    {
        foreach (var step in steps)
        {
            text = step.Normalize(text);
        }
        return text;
    }
}

/// <summary>Hugging Face's Prepend: puts the string before every non-empty stretch (Llama 2's "▁" dummy prefix).</summary>
internal sealed class PrependNormalizer(string prefix) : Normalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

internal sealed class ReplaceNormalizer(Regex pattern, string content) : Normalizer
{
    public override string Normalize(string text) => pattern.Replace(text, content.Replace("$", "$$", StringComparison.Ordinal));
}

internal sealed class UnicodeFormNormalizer(NormalizationForm form) : Normalizer
{
    public override string Normalize(string text) => text.Normalize(form);
}

internal sealed class LowercaseNormalizer : Normalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

internal sealed class SequencePreTokenizer(PreTokenizer[] steps) : PreTokenizer
{
    public override void PreTokenize(List<PreToken> tokens)
    {
        foreach (var step in steps)
        {
            step.PreTokenize(tokens);
        }
    }
}

/// <summary>How a split keeps the delimiters it finds, named as in Hugging Face's <c>SplitDelimiterBehavior</c>.</summary>
internal enum SplitBehavior
{
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

/// <summary>Shared splitting by matches: pieces are the matches and the gaps between them.</summary>
internal static class Splitter
{
    public static void Split(string text, List<(int Start, int Length)> matches, SplitBehavior behavior, bool invert,
        bool atTextStart, List<PreToken> output)
    {
        // (start, length, isDelimiter) covering the whole text.
        var parts = new List<(int Start, int Length, bool Delimiter)>(matches.Count * 2 + 1);
        int at = 0;
        foreach (var (start, length) in matches)
        {
            if (length == 0)
            {
                continue;
            }
            if (start > at)
            {
                parts.Add((at, start - at, invert));
            }
            parts.Add((start, length, !invert));
            at = start + length;
        }
        if (at < text.Length)
        {
            parts.Add((at, text.Length - at, invert));
        }

        // As Hugging Face: a delimiter merges into a neighbouring non-delimiter only, so "▁▁x" split with
        // MergedWithNext gives "▁" and "▁x"; Contiguous joins runs of delimiters.
        var merged = new List<(int Start, int Length)>(parts.Count);
        int pendingStart = -1;
        for (int i = 0; i < parts.Count; i++)
        {
            var (start, length, delimiter) = parts[i];
            bool previousIsText = i > 0 && !parts[i - 1].Delimiter;
            bool previousIsDelimiter = i > 0 && parts[i - 1].Delimiter;
            if (delimiter && behavior == SplitBehavior.Removed)
            {
                continue;
            }
            if (delimiter && ((behavior == SplitBehavior.MergedWithPrevious && previousIsText)
                || (behavior == SplitBehavior.Contiguous && previousIsDelimiter)))
            {
                merged[^1] = (merged[^1].Start, merged[^1].Length + length);
                continue;
            }
            if (delimiter && behavior == SplitBehavior.MergedWithNext && i + 1 < parts.Count && !parts[i + 1].Delimiter)
            {
                pendingStart = start;
                continue;
            }
            if (pendingStart >= 0)
            {
                merged.Add((pendingStart, start + length - pendingStart));
                pendingStart = -1;
                continue;
            }
            merged.Add((start, length));
        }

        foreach (var (start, length) in merged)
        {
            output.Add(new PreToken(text.Substring(start, length), atTextStart && start == 0));
        }
    }
}

/// <summary>Hugging Face's Split pre-tokenizer with a regex (or escaped string) pattern.</summary>
internal sealed class RegexSplitPreTokenizer(UnicodeRegex pattern, SplitBehavior behavior, bool invert) : PreTokenizer
{
    public override void PreTokenize(List<PreToken> tokens)
    {
        var input = tokens.ToArray();
        tokens.Clear();
        var matches = new List<(int, int)>();
        foreach (var token in input)
        {
            matches.Clear();
            pattern.FindMatches(token.Text, matches);
            Splitter.Split(token.Text, matches, behavior, invert, token.AtTextStart, tokens);
        }
    }
}

/// <summary>Hugging Face's Digits: ASCII digits isolated one by one, or in runs.</summary>
internal sealed class DigitsPreTokenizer(bool individualDigits) : PreTokenizer
{
    public override void PreTokenize(List<PreToken> tokens)
    {
        var input = tokens.ToArray();
        tokens.Clear();
        var matches = new List<(int, int)>();
        foreach (var token in input)
        {
            matches.Clear();
            for (int i = 0; i < token.Text.Length; i++)
            {
                if (char.IsAsciiDigit(token.Text[i]))
                {
                    matches.Add((i, 1));
                }
            }
            Splitter.Split(token.Text, matches, individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous,
                invert: false, token.AtTextStart, tokens);
        }
    }
}

/// <summary>
/// Hugging Face's ByteLevel pre-tokenizer: optionally a space before each pre-token, optionally GPT-2's split regex,
/// then each pre-token rewritten as the <see cref="ByteLevelAlphabet"/> characters of its UTF-8 bytes.
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    /// <summary>The split regex of GPT-2 that ByteLevel applies when <c>use_regex</c> is true.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly UnicodeRegex Gpt2Regex = new(Gpt2Pattern);

    public override void PreTokenize(List<PreToken> tokens)
    {
        var input = tokens.ToArray();
        tokens.Clear();
        var matches = new List<(int, int)>();
        var split = new List<PreToken>();
        foreach (var token in input)
        {
            string text = addPrefixSpace && !token.Text.StartsWith(' ') ? " " + token.Text : token.Text;
            split.Clear();
            if (useRegex)
            {
                matches.Clear();
                Gpt2Regex.FindMatches(text, matches);
                Splitter.Split(text, matches, SplitBehavior.Isolated, invert: false, token.AtTextStart, split);
            }
            else
            {
                split.Add(token with { Text = text });
            }
            foreach (var piece in split)
            {
                tokens.Add(piece with { Text = ByteLevelAlphabet.Map(piece.Text) });
            }
        }
    }
}

/// <summary>When the Metaspace pre-tokenizer puts the replacement character before a pre-token.</summary>
internal enum PrependScheme
{
    Always,
    First,
    Never,
}

/// <summary>
/// Hugging Face's Metaspace pre-tokenizer: spaces become the replacement character ("▁"), one is prepended per
/// <see cref="PrependScheme"/> unless already there, and with <c>split</c> each "▁" starts a new pre-token.
/// </summary>
internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme scheme, bool split) : PreTokenizer
{
    public override void PreTokenize(List<PreToken> tokens)
    {
        var input = tokens.ToArray();
        tokens.Clear();
        var matches = new List<(int, int)>();
        foreach (var token in input)
        {
            string text = token.Text.Replace(' ', replacement);
            bool prepend = scheme == PrependScheme.Always || (scheme == PrependScheme.First && token.AtTextStart);
            if (prepend && text.Length > 0 && text[0] != replacement)
            {
                text = replacement + text;
            }
            if (!split)
            {
                tokens.Add(token with { Text = text });
                continue;
            }
            matches.Clear();
            for (int i = 0; i < text.Length; i++)
            {
                if (text[i] == replacement)
                {
                    matches.Add((i, 1));
                }
            }
            Splitter.Split(text, matches, SplitBehavior.MergedWithNext, invert: false, token.AtTextStart, tokens);
        }
    }
}

internal sealed class SequenceDecoder(TokenDecoder[] steps) : TokenDecoder
{
    public override List<string> Decode(List<string> tokens)
    {
        foreach (var step in steps)
        {
            tokens = step.Decode(tokens);
        }
        return tokens;
    }
}

/// <summary>
/// Hugging Face's ByteLevel decoder: every token's characters map back to bytes (a token with a character outside
/// the map contributes its own UTF-8, as added tokens may), and all bytes are UTF-8-decoded once.
/// </summary>
internal sealed class ByteLevelDecoder : TokenDecoder
{
    public override List<string> Decode(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens)
        {
            int mark = bytes.Count;
            bool mapped = true;
            foreach (char c in token)
            {
                if (!ByteLevelAlphabet.TryGetByte(c, out byte b))
                {
                    mapped = false;
                    break;
                }
                bytes.Add(b);
            }
            if (!mapped)
            {
                bytes.RemoveRange(mark, bytes.Count - mark);
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
            }
        }
        return [Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes))];
    }
}

/// <summary>
/// Hugging Face's ByteFallback decoder: runs of <c>&lt;0xHH&gt;</c> tokens become the text of their bytes, or one
/// U+FFFD per byte when the run is not valid UTF-8.
/// </summary>
internal sealed class ByteFallbackDecoder : TokenDecoder
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public override List<string> Decode(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        var run = new List<byte>();
        foreach (var token in tokens)
        {
            if (TryParseByteToken(token, out byte value))
            {
                run.Add(value);
                continue;
            }
            Flush();
            output.Add(token);
        }
        Flush();
        return output;

        void Flush()
        {
            if (run.Count == 0)
            {
                return;
            }
            try
            {
                output.Add(StrictUtf8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(run)));
            }
            catch (DecoderFallbackException)
            {
                output.Add(new string('\uFFFD', run.Count));
            }
            run.Clear();
        }
    }

    /// <summary>Whether a token is <c>&lt;0xHH&gt;</c> with two hexadecimal digits, and which byte.</summary>
    public static bool TryParseByteToken(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}

internal sealed class FuseDecoder : TokenDecoder
{
    public override List<string> Decode(List<string> tokens) => [string.Concat(tokens)];
}

internal sealed class ReplaceDecoder(Regex pattern, string content) : TokenDecoder
{
    public override List<string> Decode(List<string> tokens) =>
        tokens.ConvertAll(t => pattern.Replace(t, content.Replace("$", "$$", StringComparison.Ordinal)));
}

/// <summary>Hugging Face's Strip decoder: up to <c>start</c> leading and <c>stop</c> trailing <c>content</c> characters off each token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : TokenDecoder
{
    public override List<string> Decode(List<string> tokens) => tokens.ConvertAll(token =>
    {
        int from = 0;
        while (from < start && from < token.Length && token[from] == content)
        {
            from++;
        }
        int to = token.Length;
        while (token.Length - to < stop && to > from && token[to - 1] == content)
        {
            to--;
        }
        return token[from..to];
    });
}

/// <summary>
/// Hugging Face's Metaspace decoder: the replacement character becomes a space, except in the first token when a
/// prefix was prepended, where it is dropped (undoing the encoder's dummy prefix).
/// </summary>
internal sealed class MetaspaceDecoder(char replacement, PrependScheme scheme) : TokenDecoder
{
    public override List<string> Decode(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            output.Add(i == 0 && scheme != PrependScheme.Never
                ? tokens[i].Replace(replacement.ToString(), "", StringComparison.Ordinal)
                : tokens[i].Replace(replacement, ' '));
        }
        return output;
    }
}

/// <summary>Builds pipeline steps from <c>tokenizer.json</c> elements, reporting problems by file and JSON path.</summary>
internal sealed class PipelineReader(string path)
{
    public InvalidDataException Invalid(string jsonPath, string what) =>
        new($"Tokenizer file '{path}': {jsonPath} {what}.");

    public Normalizer? ReadNormalizer(JsonElement element, string at)
    {
        if (element.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        string type = RequireType(element, at);
        return type switch
        {
            "Sequence" => new SequenceNormalizer(ReadArray(element, "normalizers", at).Select((e, i) => ReadNormalizer(e, $"{at}.normalizers[{i}]")!).ToArray()),
            "Prepend" => new PrependNormalizer(RequireString(element, "prepend", at)),
            "Replace" => new ReplaceNormalizer(ReadPattern(element, at), RequireString(element, "content", at)),
            "NFC" => new UnicodeFormNormalizer(NormalizationForm.FormC),
            "NFD" => new UnicodeFormNormalizer(NormalizationForm.FormD),
            "NFKC" => new UnicodeFormNormalizer(NormalizationForm.FormKC),
            "NFKD" => new UnicodeFormNormalizer(NormalizationForm.FormKD),
            "Lowercase" => new LowercaseNormalizer(),
            _ => throw Invalid($"{at}.type", $"is '{type}', a normalizer this loader does not support (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase)"),
        };
    }

    public PreTokenizer? ReadPreTokenizer(JsonElement element, string at)
    {
        if (element.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        string type = RequireType(element, at);
        switch (type)
        {
            case "Sequence":
                return new SequencePreTokenizer(ReadArray(element, "pretokenizers", at).Select((e, i) => ReadPreTokenizer(e, $"{at}.pretokenizers[{i}]")!).ToArray());
            case "ByteLevel":
                return new ByteLevelPreTokenizer(OptionalBool(element, "add_prefix_space", false, at), OptionalBool(element, "use_regex", true, at));
            case "Split":
                return new RegexSplitPreTokenizer(ReadUnicodePattern(element, at), ReadBehavior(element, at), OptionalBool(element, "invert", false, at));
            case "Digits":
                return new DigitsPreTokenizer(OptionalBool(element, "individual_digits", false, at));
            case "Metaspace":
                return new MetaspacePreTokenizer(ReadReplacement(element, at), ReadPrependScheme(element, at), OptionalBool(element, "split", true, at));
            default:
                throw Invalid($"{at}.type", $"is '{type}', a pre-tokenizer this loader does not support (supported: Sequence, ByteLevel, Split, Digits, Metaspace)");
        }
    }

    public TokenDecoder? ReadDecoder(JsonElement element, string at)
    {
        if (element.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        string type = RequireType(element, at);
        return type switch
        {
            "Sequence" => new SequenceDecoder(ReadArray(element, "decoders", at).Select((e, i) => ReadDecoder(e, $"{at}.decoders[{i}]")!).ToArray()),
            "ByteLevel" => new ByteLevelDecoder(),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Replace" => new ReplaceDecoder(ReadPattern(element, at), RequireString(element, "content", at)),
            "Strip" => new StripDecoder(ReadChar(element, "content", at), OptionalInt(element, "start", at), OptionalInt(element, "stop", at)),
            "Metaspace" => new MetaspaceDecoder(ReadReplacement(element, at), ReadPrependScheme(element, at)),
            _ => throw Invalid($"{at}.type", $"is '{type}', a decoder this loader does not support (supported: Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace)"),
        };
    }

    public string RequireType(JsonElement element, string at)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(at, $"is a JSON {element.ValueKind}, not an object");
        }
        return RequireString(element, "type", at);
    }

    public string RequireString(JsonElement element, string name, string at)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.String)
        {
            throw Invalid($"{at}.{name}", "is missing or not a string");
        }
        return value.GetString()!;
    }

    public bool OptionalBool(JsonElement element, string name, bool fallback, string at)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return fallback;
        }
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Invalid($"{at}.{name}", $"is a JSON {value.ValueKind}, not true or false"),
        };
    }

    private int OptionalInt(JsonElement element, string name, string at)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return 0;
        }
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int result) || result < 0)
        {
            throw Invalid($"{at}.{name}", "is not a non-negative integer");
        }
        return result;
    }

    private IEnumerable<JsonElement> ReadArray(JsonElement element, string name, string at)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.Array)
        {
            throw Invalid($"{at}.{name}", "is missing or not an array");
        }
        return value.EnumerateArray().ToArray();
    }

    private char ReadChar(JsonElement element, string name, string at)
    {
        string text = RequireString(element, name, at);
        if (text.Length != 1)
        {
            throw Invalid($"{at}.{name}", $"is \"{text}\", not a single character");
        }
        return text[0];
    }

    private char ReadReplacement(JsonElement element, string at) =>
        element.TryGetProperty("replacement", out _) ? ReadChar(element, "replacement", at) : '\u2581';

    /// <summary>Newer files say <c>prepend_scheme</c>; older ones <c>add_prefix_space</c> (true meaning always).</summary>
    private PrependScheme ReadPrependScheme(JsonElement element, string at)
    {
        if (element.TryGetProperty("prepend_scheme", out var scheme) && scheme.ValueKind == JsonValueKind.String)
        {
            return scheme.GetString() switch
            {
                "always" => PrependScheme.Always,
                "first" => PrependScheme.First,
                "never" => PrependScheme.Never,
                var other => throw Invalid($"{at}.prepend_scheme", $"is '{other}', not always, first or never"),
            };
        }
        return OptionalBool(element, "add_prefix_space", true, at) ? PrependScheme.Always : PrependScheme.Never;
    }

    private SplitBehavior ReadBehavior(JsonElement element, string at)
    {
        string behavior = RequireString(element, "behavior", at);
        return Enum.TryParse<SplitBehavior>(behavior, ignoreCase: false, out var value) && Enum.IsDefined(value)
            ? value
            : throw Invalid($"{at}.behavior", $"is '{behavior}', not Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous");
    }

    /// <summary>The regex source of a <c>pattern</c>: <c>{"Regex": …}</c> as given, <c>{"String": …}</c> escaped.</summary>
    private string ReadPatternSource(JsonElement element, string at)
    {
        if (!element.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
        {
            throw Invalid($"{at}.pattern", "is missing or not an object with a \"String\" or \"Regex\" key");
        }
        if (pattern.TryGetProperty("Regex", out var regex) && regex.ValueKind == JsonValueKind.String)
        {
            return regex.GetString()!;
        }
        if (pattern.TryGetProperty("String", out var literal) && literal.ValueKind == JsonValueKind.String)
        {
            return Regex.Escape(literal.GetString()!);
        }
        throw Invalid($"{at}.pattern", "has neither a \"String\" nor a \"Regex\" string");
    }

    private Regex ReadPattern(JsonElement element, string at)
    {
        string source = ReadPatternSource(element, at);
        try
        {
            return new Regex(source, RegexOptions.CultureInvariant);
        }
        catch (ArgumentException e)
        {
            throw Invalid($"{at}.pattern", $"is a regex .NET cannot compile ({e.Message})");
        }
    }

    private UnicodeRegex ReadUnicodePattern(JsonElement element, string at)
    {
        string source = ReadPatternSource(element, at);
        try
        {
            return new UnicodeRegex(source);
        }
        catch (ArgumentException e)
        {
            throw Invalid($"{at}.pattern", $"is a regex .NET cannot compile ({e.Message})");
        }
    }
}
