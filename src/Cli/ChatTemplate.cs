using PeftGen.Generation;
using PeftGen.Models.Llama;
using PeftGen.Text;

namespace PeftGen.Cli;

/// <summary>
/// How chat and generate --chat-format turn messages into a prompt and where a reply ends: one of the runtime's chat
/// formats (<see cref="ChatFormat"/>: the Jinja templates of the common model families, recognised by their markers, no
/// template engine), or <c>none</c> (plain text: each user message on a new line, each reply continuing it up to the end
/// of its line). A reply ends at end-of-sequence or at the format's end-of-turn marker (or the start of a next turn; a
/// newline for none), which is not shown.
/// </summary>
internal sealed class ChatTemplate
{
    /// <summary>The value of --chat-format that takes the format from the tokenizer's chat_template.</summary>
    public const string Auto = "auto";

    /// <summary>The value of --chat-format for plain text turns.</summary>
    public const string None = "none";

    private readonly ChatFormat? _format;

    private ChatTemplate(ChatFormat? format, string source)
    {
        _format = format;
        Source = source;
        StopMarkers = format?.Name switch
        {
            "chatml" => ["<|im_end|>", "<|im_start|>"],
            "llama3" => ["<|eot_id|>", "<|start_header_id|>"],
            "llama2" or "mistral" => ["</s>", "[INST]"],
            "alpaca" => ["### Instruction:", "### Response:", "### Input:"],
            _ => ["\n"], // plain text: one turn per line
        };
    }

    /// <summary>The values --chat-format takes.</summary>
    public static IReadOnlyList<string> Names { get; } = [.. ChatFormat.Names, None];

    /// <summary>The format's name (chatml, llama3, llama2, mistral, alpaca, none).</summary>
    public string Name => _format?.Name ?? None;

    /// <summary>Where the format came from: "--chat-format" or the tokenizer config's chat_template.</summary>
    public string Source { get; }

    /// <summary>Text that ends a reply (the end-of-turn marker, or the start of a next turn).</summary>
    public IReadOnlyList<string> StopMarkers { get; }

    /// <summary>
    /// Checks a --chat-format value before anything loads: a known format, <c>none</c>, <c>auto</c> or null.
    /// </summary>
    /// <exception cref="CliError">Unknown name; the message lists the known ones.</exception>
    public static void CheckName(string? name, string option = "--chat-format")
    {
        if (name == null || name.Equals(Auto, StringComparison.OrdinalIgnoreCase) || name.Equals(None, StringComparison.OrdinalIgnoreCase)) return;
        if (!ChatFormat.Names.Contains(name, StringComparer.OrdinalIgnoreCase))
            throw new CliError($"{option} {name}: unknown chat format; known formats: {string.Join(", ", Names)} (or {Auto}: from the tokenizer's chat template).");
    }

    /// <summary>
    /// The format named by --chat-format, or (null or auto) the one recognised in the tokenizer's chat_template
    /// (tokenizer_config.json beside tokenizer.json).
    /// </summary>
    /// <exception cref="CliError">No format was named and the tokenizer has no chat template PeftGen recognises.</exception>
    public static ChatTemplate Resolve(string? name, ITokenizer tokenizer, string tokenizerPath, string option = "--chat-format")
    {
        CheckName(name, option);
        if (name != null && name.Equals(None, StringComparison.OrdinalIgnoreCase)) return new ChatTemplate(null, option);
        if (name != null && !name.Equals(Auto, StringComparison.OrdinalIgnoreCase)) return new ChatTemplate(ChatFormat.Get(name), option);
        var hf = tokenizer as HuggingFaceTokenizer;
        if (hf?.ChatFormatName is { } detected) return new ChatTemplate(ChatFormat.Get(detected), "the tokenizer's chat_template");
        string why = hf == null
            ? $"the tokenizer {tokenizerPath} is a llama2.c tokenizer, which carries no chat template"
            : hf.ChatTemplate == null
                ? $"the tokenizer {tokenizerPath} has no chat_template (in tokenizer_config.json beside it)"
                : $"the chat_template of {tokenizerPath} is none of the formats PeftGen recognises ({string.Join(", ", ChatFormat.Names)}; PeftGen has no Jinja engine)";
        throw new CliError($"{why}: give {option} with one of {string.Join(", ", Names)} ({None}: plain text turns, for a model not trained to chat).");
    }

    /// <summary>The prompt for the next reply: the messages rendered, ending where the assistant's reply begins.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages)
    {
        if (_format != null) return _format.Render(messages, addGenerationPrompt: true).Text;
        // Plain text: the system prompt and each user message start a line; a reply continues its message's line as it
        // was generated (see HistoryText), so the model sees its own text again.
        var text = new System.Text.StringBuilder();
        foreach (var m in messages)
        {
            if (m.Role != "assistant" && text.Length > 0) text.Append('\n');
            text.Append(m.Content);
        }
        return text.ToString();
    }

    /// <summary>
    /// Generates one reply to <paramref name="promptIds"/>: stops at end-of-sequence, at a stop marker, after
    /// <see cref="SamplingOptions.MaxNewTokens"/> tokens, when the context is full, or when <paramref name="cancel"/> is
    /// cancelled (the reply so far is kept). <paramref name="write"/> receives the text as it is generated, without
    /// leading whitespace, stop markers, or a character still being spelled out byte by byte.
    /// </summary>
    public Reply Generate(LlamaForCausalLM model, ITokenizer tokenizer, int[] promptIds, SamplingOptions sampling, CancellationToken cancel,
        Action<string>? write = null, Action<int>? onToken = null)
    {
        // The reply is decoded after the prompt's last token, so a leading space and multi-byte characters come out as in
        // the whole text.
        int[] anchor = [promptIds[^1]];
        string anchorText = tokenizer.Decode(anchor);
        var ids = new List<int>(anchor);
        int written = 0, tokens = 0;
        bool stopped = false, cancelled = false;
        string text = "";
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        try
        {
            new Generation.TextGenerator(model, tokenizer).GenerateIds(promptIds, sampling, stop.Token, id =>
            {
                tokens++;
                ids.Add(id);
                string all = tokenizer.Decode(ids.ToArray());
                text = all.StartsWith(anchorText, StringComparison.Ordinal) ? all[anchorText.Length..] : tokenizer.Decode(ids.ToArray().AsSpan(1));
                int end = StopAt(text);
                if (end >= 0)
                {
                    text = text[..end];
                    stopped = true;
                    stop.Cancel();
                }
                // Leading whitespace is never shown; trailing whitespace waits for what follows it.
                int from = Math.Max(written, text.Length - text.TrimStart().Length);
                int safe = Math.Min(stopped ? text.Length : SafeLength(text), text.TrimEnd().Length);
                if (safe > from)
                {
                    write?.Invoke(text[from..safe]);
                    written = safe;
                }
                onToken?.Invoke(id);
            });
        }
        catch (OperationCanceledException) when (stopped || cancel.IsCancellationRequested)
        {
            cancelled = !stopped;
        }
        string reply = text.Trim();
        int shown = Math.Max(written, text.Length - text.TrimStart().Length);
        int last = text.TrimEnd().Length;
        if (last > shown) write?.Invoke(text[shown..last]);
        return new Reply(reply, text.TrimEnd(), tokens, cancelled);
    }

    /// <summary>What the conversation keeps of a reply: the text as generated for plain text (it continues the user's line), else trimmed.</summary>
    public string HistoryText(Reply reply) => _format == null ? reply.Raw : reply.Text;

    /// <summary>Where the first stop marker begins in <paramref name="text"/>, or −1.</summary>
    private int StopAt(string text)
    {
        int at = -1;
        foreach (var marker in StopMarkers)
        {
            int i = text.IndexOf(marker, StringComparison.Ordinal);
            if (i >= 0 && (at < 0 || i < at)) at = i;
        }
        return at;
    }

    /// <summary>
    /// How much of <paramref name="text"/> can be shown now: not a trailing part that may grow into a stop marker, nor a
    /// trailing U+FFFD (a character whose bytes are still arriving).
    /// </summary>
    private int SafeLength(string text)
    {
        int safe = text.Length;
        foreach (var marker in StopMarkers)
            for (int n = Math.Min(marker.Length - 1, text.Length); n > 0; n--)
                if (text.AsSpan(text.Length - n).SequenceEqual(marker.AsSpan(0, n)))
                {
                    safe = Math.Min(safe, text.Length - n);
                    break;
                }
        while (safe > 0 && text[safe - 1] == '\uFFFD') safe--;
        return safe;
    }
}

/// <summary>One generated reply.</summary>
/// <param name="Text">The reply, trimmed, without the stop marker.</param>
/// <param name="Raw">The reply as generated (leading space kept), without the stop marker and trailing whitespace.</param>
/// <param name="Tokens">Tokens generated (the marker's included).</param>
/// <param name="Cancelled">Whether Ctrl-C stopped it.</param>
internal sealed record Reply(string Text, string Raw, int Tokens, bool Cancelled);
