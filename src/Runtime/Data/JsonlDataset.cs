using System.Text.Json;
using PeftGen.Text;

namespace PeftGen.Data;

/// <summary>The kind of records in a JSONL dataset.</summary>
public enum DatasetKind
{
    /// <summary>Decide from the first record: "messages" means chat, "instruction" Alpaca, "text" plain text.</summary>
    Auto,

    /// <summary><c>{"text": "…"}</c>: language modelling on every token.</summary>
    Text,

    /// <summary><c>{"instruction": "…", "input": "…" (optional), "output": "…"}</c>.</summary>
    Alpaca,

    /// <summary><c>{"messages": [{"role": "…", "content": "…"}, …]}</c>.</summary>
    Chat,
}

/// <summary>How <see cref="JsonlDataset.Load"/> reads and tokenizes a file.</summary>
public sealed record JsonlDatasetOptions
{
    /// <summary>The record kind; <see cref="DatasetKind.Auto"/> (the default) detects it from the first record.</summary>
    public DatasetKind Kind { get; init; } = DatasetKind.Auto;

    /// <summary>
    /// The prompt format of Alpaca and chat records. Null (the default) uses the format recognised in a
    /// <see cref="HuggingFaceTokenizer"/>'s chat template, else alpaca for Alpaca records and chatml for chat records.
    /// </summary>
    public ChatFormat? ChatFormat { get; init; }

    /// <summary>
    /// Most input tokens per training row; an example keeps its first <c>MaxSequenceLength + 1</c> tokens (the extra
    /// one is the last target). Default 2048.
    /// </summary>
    public int MaxSequenceLength { get; init; } = 2048;

    /// <summary>
    /// Whether only assistant replies (Alpaca outputs) are scored, the default; false scores prompts too. Plain text
    /// is always scored everywhere.
    /// </summary>
    public bool ResponseOnlyLoss { get; init; } = true;

    /// <summary>Whether malformed lines are skipped and counted in <see cref="JsonlDataset.SkippedLines"/> instead of failing.</summary>
    public bool SkipInvalid { get; init; }

    /// <summary>Whether each example starts with BOS; null (the default) follows the tokenizer (<see cref="HuggingFaceTokenizer.AddBosToken"/>, else true).</summary>
    public bool? AddBos { get; init; }

    /// <summary>
    /// Whether each example ends with a scored EOS; null (the default) means yes for plain text and for formats
    /// without an end-of-turn marker (alpaca), else what the tokenizer says (<see cref="HuggingFaceTokenizer.AddEosToken"/>, else no).
    /// </summary>
    public bool? AddEos { get; init; }
}

/// <summary>One tokenized example.</summary>
/// <param name="Tokens">The token ids.</param>
/// <param name="Labels">Per token, the token id when it is scored as a prediction target, else -100 (prompt tokens).</param>
public sealed record TokenizedExample(int[] Tokens, int[] Labels);

/// <summary>
/// A JSONL fine-tuning dataset, tokenized: plain text, Alpaca instructions or chat conversations, with the loss
/// restricted to responses by default. Feed it to training through <see cref="DatasetBatchSource"/>.
/// </summary>
public sealed class JsonlDataset
{
    /// <summary>The label of a token that is not scored.</summary>
    public const int IgnoreLabel = -100;

    private const int MaxJsonDepth = 64;

    private JsonlDataset(string path, DatasetKind kind, ChatFormat? format, List<TokenizedExample> examples,
        int skipped, int truncated, int dropped, int padId)
    {
        FilePath = path;
        Kind = kind;
        ChatFormat = format;
        Examples = examples;
        SkippedLines = skipped;
        TruncatedExamples = truncated;
        DroppedExamples = dropped;
        PadId = padId;
    }

    /// <summary>The file the dataset was read from.</summary>
    public string FilePath { get; }

    /// <summary>The record kind, as given or detected.</summary>
    public DatasetKind Kind { get; }

    /// <summary>The prompt format used for Alpaca and chat records; null for plain text.</summary>
    public ChatFormat? ChatFormat { get; }

    /// <summary>The examples in file order.</summary>
    public IReadOnlyList<TokenizedExample> Examples { get; }

    /// <summary>Malformed lines skipped because <see cref="JsonlDatasetOptions.SkipInvalid"/> was set.</summary>
    public int SkippedLines { get; }

    /// <summary>Examples cut to <see cref="JsonlDatasetOptions.MaxSequenceLength"/> + 1 tokens.</summary>
    public int TruncatedExamples { get; }

    /// <summary>Examples left out because they had fewer than two tokens or (after truncation) no scored token to learn from.</summary>
    public int DroppedExamples { get; }

    /// <summary>The id that pads short rows: the tokenizer's EOS (padding is never scored).</summary>
    public int PadId { get; }

    /// <summary>Reads and tokenizes a JSONL file: one JSON object per line; blank lines are ignored.</summary>
    /// <param name="path">The file.</param>
    /// <param name="tokenizer">The tokenizer.</param>
    /// <param name="options">Reading options; null for the defaults.</param>
    /// <returns>The dataset.</returns>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="InvalidDataException">
    /// A line is malformed (and <see cref="JsonlDatasetOptions.SkipInvalid"/> is off), or the file has no usable
    /// example; the message names the file and the 1-based line number.
    /// </exception>
    public static JsonlDataset Load(string path, ITokenizer tokenizer, JsonlDatasetOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tokenizer);
        options ??= new JsonlDatasetOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxSequenceLength, 1, nameof(options));
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Dataset file '{path}' does not exist.", path);
        }

        var hf = tokenizer as HuggingFaceTokenizer;
        var kind = options.Kind;
        ChatFormat? format = null;
        var examples = new List<TokenizedExample>();
        int skipped = 0, truncated = 0, dropped = 0, lineNumber = 0;
        int longestTokenChars = 0; // computed the first time a text is long enough to be cut
        foreach (string line in ReadBoundedLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }
            TokenizedExample example;
            try
            {
                using var document = ParseLine(line);
                var record = document.RootElement;
                if (kind == DatasetKind.Auto)
                {
                    kind = DetectKind(record);
                }
                if (kind != DatasetKind.Text && format is null)
                {
                    format = options.ChatFormat
                        ?? (hf?.ChatFormatName is string name ? ChatFormat.Get(name) : kind == DatasetKind.Alpaca ? ChatFormat.Alpaca : ChatFormat.ChatML);
                }
                example = Tokenize(record, kind, format, tokenizer, hf, options, ref longestTokenChars);
            }
            catch (RecordException e)
            {
                if (options.SkipInvalid)
                {
                    skipped++;
                    continue;
                }
                throw new InvalidDataException($"Dataset '{path}' line {lineNumber}: {e.Message}.", e.InnerException);
            }

            if (example.Tokens.Length > options.MaxSequenceLength + 1)
            {
                truncated++;
                example = new TokenizedExample(example.Tokens[..(options.MaxSequenceLength + 1)], example.Labels[..(options.MaxSequenceLength + 1)]);
            }
            // Token 0 is never a target (nothing precedes it), so an example needs a scored label after it.
            if (example.Tokens.Length < 2 || !example.Labels.AsSpan(1).ContainsAnyExcept(IgnoreLabel))
            {
                dropped++;
                continue;
            }
            examples.Add(example);
        }

        if (examples.Count == 0)
        {
            throw new InvalidDataException(
                $"Dataset '{path}' has no usable example ({lineNumber} lines, {skipped} skipped as malformed, {dropped} without a scored token).");
        }
        return new JsonlDataset(path, kind, kind == DatasetKind.Text ? null : format, examples, skipped, truncated, dropped, tokenizer.EosId);
    }

    /// <summary>
    /// Splits the examples into training and evaluation sets: a seeded shuffle picks
    /// <c>round(Count * evalFraction)</c> examples for evaluation; both parts keep file order.
    /// </summary>
    /// <param name="evalFraction">Share of examples for evaluation, in [0, 1].</param>
    /// <param name="seed">Seed of the shuffle; the same seed gives the same split.</param>
    /// <returns>The two parts.</returns>
    public (IReadOnlyList<TokenizedExample> Train, IReadOnlyList<TokenizedExample> Eval) Split(double evalFraction, int seed)
    {
        if (!(evalFraction >= 0 && evalFraction <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(evalFraction), evalFraction, "The evaluation fraction must be between 0 and 1.");
        }
        int evalCount = (int)Math.Round(Examples.Count * evalFraction, MidpointRounding.AwayFromZero);
        var order = SeededShuffle.Permutation(Examples.Count, (ulong)(uint)seed, stream: 0);
        var isEval = new bool[Examples.Count];
        for (int i = 0; i < evalCount; i++)
        {
            isEval[order[i]] = true;
        }
        var train = new List<TokenizedExample>(Examples.Count - evalCount);
        var eval = new List<TokenizedExample>(evalCount);
        for (int i = 0; i < Examples.Count; i++)
        {
            (isEval[i] ? eval : train).Add(Examples[i]);
        }
        return (train, eval);
    }

    /// <summary>A batch source over all examples (or <paramref name="examples"/>), padded with <see cref="PadId"/>.</summary>
    /// <param name="batchSize">Rows per batch.</param>
    /// <param name="maxSequenceLength">Most input tokens per row.</param>
    /// <param name="seed">Seed of the per-epoch shuffle.</param>
    /// <param name="pack">Whether to pack examples into full rows; see <see cref="DatasetBatchSource"/>.</param>
    /// <param name="shuffle">Whether to shuffle rows each epoch.</param>
    /// <param name="examples">The examples to use, such as the training part of <see cref="Split"/>; null for all.</param>
    /// <returns>The batch source.</returns>
    public DatasetBatchSource CreateBatchSource(int batchSize, int maxSequenceLength, int seed, bool pack = false, bool shuffle = true,
        IReadOnlyList<TokenizedExample>? examples = null) =>
        new(examples ?? Examples, batchSize, maxSequenceLength, seed, PadId, pack, shuffle);

    private static JsonDocument ParseLine(string line)
    {
        try
        {
            var document = JsonDocument.Parse(line, new JsonDocumentOptions { MaxDepth = MaxJsonDepth });
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                var kind = document.RootElement.ValueKind;
                document.Dispose();
                throw new RecordException($"the line is a JSON {kind}, not an object");
            }
            return document;
        }
        catch (JsonException e)
        {
            throw new RecordException($"not valid JSON ({e.Message})", e);
        }
    }

    private static DatasetKind DetectKind(JsonElement record)
    {
        if (record.TryGetProperty("messages", out _)) return DatasetKind.Chat;
        if (record.TryGetProperty("instruction", out _)) return DatasetKind.Alpaca;
        if (record.TryGetProperty("text", out _)) return DatasetKind.Text;
        throw new RecordException("the record has none of the keys \"text\", \"instruction\" or \"messages\", so its kind is unknown");
    }

    /// <summary>Longest line accepted, in characters (16 Mi): a longer line is refused rather than read without bound.</summary>
    public const int MaxLineChars = 16 * 1024 * 1024;

    /// <summary>
    /// The lines of a file, each read with a bounded length: a line longer than <see cref="MaxLineChars"/> (or a file with no
    /// newline within that many characters, such as /dev/zero) stops the read with an error naming the file and line.
    /// </summary>
    private static IEnumerable<string> ReadBoundedLines(string path)
    {
        using var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16), detectEncodingFromByteOrderMarks: true);
        var buffer = new char[1 << 16];
        var line = new System.Text.StringBuilder();
        int lineNumber = 1, read;
        bool pendingCr = false;
        while ((read = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < read; i++)
            {
                char c = buffer[i];
                if (pendingCr)
                {
                    pendingCr = false;
                    if (c == '\n')
                    {
                        start = i + 1;
                        continue;
                    }
                }
                if (c != '\n' && c != '\r') continue;
                Append(buffer.AsSpan(start, i - start));
                yield return line.ToString();
                line.Clear();
                lineNumber++;
                pendingCr = c == '\r';
                start = i + 1;
            }
            Append(buffer.AsSpan(start, read - start));
        }
        if (line.Length > 0) yield return line.ToString();

        void Append(ReadOnlySpan<char> chars)
        {
            if (line.Length + chars.Length > MaxLineChars)
                throw new InvalidDataException(
                    $"Dataset '{path}' line {lineNumber}: the line is longer than {MaxLineChars / (1024 * 1024)} Mi characters (or the file has no newline), so it is not read: "
                    + "a JSONL dataset holds one record per line; split long texts into several records.");
            line.Append(chars);
        }
    }

    /// <summary>
    /// Cuts a text that is far longer than <paramref name="options"/>' maximum length can use, before it is tokenized: every
    /// token covers at most <paramref name="longestTokenChars"/> characters, so the kept prefix still yields more than
    /// MaxSequenceLength + 1 tokens (plus a margin, so the cut cannot change the tokens that are kept). Texts under the bound
    /// are returned as they are.
    /// </summary>
    private static string CutForTokenizing(string text, ITokenizer tokenizer, JsonlDatasetOptions options, ref int longestTokenChars)
    {
        const int MarginTokens = 64, MinCharsPerToken = 256;
        long quick = (long)(options.MaxSequenceLength + 1 + MarginTokens) * MinCharsPerToken;
        if (text.Length <= quick) return text;
        if (longestTokenChars == 0)
        {
            longestTokenChars = 1;
            for (int id = 0; id < tokenizer.VocabSize; id++)
            {
                try
                {
                    longestTokenChars = Math.Max(longestTokenChars, tokenizer.Decode([id]).Length);
                }
                catch (ArgumentException)
                {
                    // an id the tokenizer cannot decode on its own contributes nothing
                }
            }
        }
        long bound = (long)(options.MaxSequenceLength + 1 + MarginTokens) * Math.Max(longestTokenChars, MinCharsPerToken);
        if (text.Length <= bound) return text;
        int cut = (int)bound;
        if (char.IsHighSurrogate(text[cut - 1])) cut--; // never split a surrogate pair
        return text[..cut];
    }

    private static TokenizedExample Tokenize(JsonElement record, DatasetKind kind, ChatFormat? format, ITokenizer tokenizer,
        HuggingFaceTokenizer? hf, JsonlDatasetOptions options, ref int longestTokenChars)
    {
        bool addBos = options.AddBos ?? hf?.AddBosToken ?? true;
        if (kind == DatasetKind.Text)
        {
            string full = RequireString(record, "text");
            string cutText = CutForTokenizing(full, tokenizer, options, ref longestTokenChars);
            // A cut text yields more than MaxSequenceLength + 1 tokens, so the EOS would be cut off anyway.
            var ids = tokenizer.Encode(cutText, addBos, (options.AddEos ?? true) && ReferenceEquals(cutText, full));
            return new TokenizedExample(ids, (int[])ids.Clone());
        }

        List<ChatMessage> messages = kind == DatasetKind.Alpaca ? AlpacaMessages(record, format!) : ChatMessages(record);
        if (!messages.Any(m => m.Role == "assistant"))
        {
            throw new RecordException("the conversation has no assistant message, so there is nothing to train on");
        }
        ChatRendering rendering;
        try
        {
            rendering = format!.Render(messages, addGenerationPrompt: false);
        }
        catch (ArgumentException e)
        {
            throw new RecordException($"the {format!.Name} format cannot render it: {e.Message}", e);
        }

        bool addEos = options.AddEos ?? (!format.HasEndOfTurnMarker || (hf?.AddEosToken ?? false));
        string text = CutForTokenizing(rendering.Text, tokenizer, options, ref longestTokenChars);
        if (!ReferenceEquals(text, rendering.Text)) addEos = false; // it would be cut off with the rest of the long text
        var tokens = tokenizer.Encode(text, addBos, addEos);
        var labels = new int[tokens.Length];
        if (!options.ResponseOnlyLoss)
        {
            tokens.CopyTo(labels, 0);
            return new TokenizedExample(tokens, labels);
        }

        Array.Fill(labels, IgnoreLabel);
        int textTokens = tokens.Length - (addEos ? 1 : 0);
        foreach (var span in rendering.AssistantSpans)
        {
            if (span.Start >= text.Length) break; // past a cut: those tokens are beyond the maximum length
            var end0 = Math.Min(span.End, text.Length);
            // A span's tokens are those between the token counts of the text before it and the text through it.
            // Encoding prefixes needs no offsets from the tokenizer, and the formats end prompts at a marker
            // ("\n", "]", a special token), where tokenization of the prefix and of the whole text agree.
            int first = Math.Min(tokenizer.Encode(text[..span.Start], addBos, addEos: false).Length, textTokens);
            int end = end0 == text.Length ? textTokens : Math.Min(tokenizer.Encode(text[..end0], addBos, addEos: false).Length, textTokens);
            for (int t = first; t < end; t++)
            {
                labels[t] = tokens[t];
            }
        }
        if (addEos && rendering.AssistantSpans.Count > 0 && rendering.AssistantSpans[^1].End == text.Length && text.Length == rendering.Text.Length)
        {
            // EOS right after the final reply ends that reply, so it is learnt with it.
            labels[^1] = tokens[^1];
        }
        return new TokenizedExample(tokens, labels);
    }

    private static List<ChatMessage> AlpacaMessages(JsonElement record, ChatFormat format)
    {
        string instruction = RequireString(record, "instruction");
        string output = RequireString(record, "output");
        string input = "";
        if (record.TryGetProperty("input", out var inputElement) && inputElement.ValueKind != JsonValueKind.Null)
        {
            input = inputElement.ValueKind == JsonValueKind.String
                ? inputElement.GetString()!
                : throw new RecordException($"\"input\" is a JSON {inputElement.ValueKind}, not a string");
        }
        var messages = new List<ChatMessage>(3);
        // The alpaca format has its own Input section; other formats get the input below the instruction.
        if (format == ChatFormat.Alpaca)
        {
            messages.Add(new ChatMessage("user", instruction));
            if (input.Length > 0)
            {
                messages.Add(new ChatMessage("input", input));
            }
        }
        else
        {
            messages.Add(new ChatMessage("user", input.Length > 0 ? $"{instruction}\n\n{input}" : instruction));
        }
        messages.Add(new ChatMessage("assistant", output));
        return messages;
    }

    private static List<ChatMessage> ChatMessages(JsonElement record)
    {
        if (!record.TryGetProperty("messages", out var array) || array.ValueKind != JsonValueKind.Array)
        {
            throw new RecordException("\"messages\" is missing or not an array");
        }
        var messages = new List<ChatMessage>(array.GetArrayLength());
        int index = 0;
        foreach (var message in array.EnumerateArray())
        {
            if (message.ValueKind != JsonValueKind.Object)
            {
                throw new RecordException($"messages[{index}] is a JSON {message.ValueKind}, not an object");
            }
            messages.Add(new ChatMessage(RequireString(message, "role", $"messages[{index}]."), RequireString(message, "content", $"messages[{index}].")));
            index++;
        }
        return messages;
    }

    private static string RequireString(JsonElement element, string key, string prefix = "")
    {
        if (!element.TryGetProperty(key, out var value))
        {
            throw new RecordException($"\"{prefix}{key}\" is missing");
        }
        return value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw new RecordException($"\"{prefix}{key}\" is a JSON {value.ValueKind}, not a string");
    }

    /// <summary>What is wrong with one record; becomes an <see cref="InvalidDataException"/> naming the file and line.</summary>
    private sealed class RecordException(string message, Exception? inner = null) : Exception(message, inner);
}
