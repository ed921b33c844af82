using System.Text;

namespace PeftGen.Text;

/// <summary>One message of a conversation.</summary>
/// <param name="Role">"system", "user" or "assistant" (the alpaca format also takes "input").</param>
/// <param name="Content">The message text.</param>
public sealed record ChatMessage(string Role, string Content);

/// <summary>A range of characters in a rendered conversation.</summary>
/// <param name="Start">Index of the first character.</param>
/// <param name="Length">Number of characters.</param>
public readonly record struct CharSpan(int Start, int Length)
{
    /// <summary>Index just past the last character.</summary>
    public int End => Start + Length;
}

/// <summary>A conversation rendered as text, with where the assistant's replies lie in it.</summary>
/// <param name="Text">The prompt text, ready to tokenize (without a leading BOS; the tokenizer adds it).</param>
/// <param name="AssistantSpans">
/// One span per assistant message, in order: the reply and the format's end-of-turn marker after it (such as
/// <c>&lt;|im_end|&gt;</c>), so that training on these spans also teaches the model to stop.
/// </param>
public sealed record ChatRendering(string Text, IReadOnlyList<CharSpan> AssistantSpans);

/// <summary>
/// A chat prompt format: how a list of messages becomes the text a model was trained on. The formats reproduce the
/// Jinja chat templates shipped with the models' <c>tokenizer_config.json</c>, except that the leading BOS is left to
/// the tokenizer (<see cref="ITokenizer.Encode"/> with <c>addBos</c>) so it is not doubled.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item><c>chatml</c> (Qwen2, SmolLM): <c>&lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n</c>.</item>
/// <item><c>llama3</c>: <c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\ncontent&lt;|eot_id|&gt;</c>, content trimmed.</item>
/// <item><c>llama2</c>: <c>[INST] &lt;&lt;SYS&gt;&gt;\nsystem\n&lt;&lt;/SYS&gt;&gt;\n\nuser [/INST] reply &lt;/s&gt;&lt;s&gt;[INST] …</c>, contents trimmed.</item>
/// <item><c>mistral</c>: <c>[INST] user [/INST]reply&lt;/s&gt;[INST] …</c>; a system message is put before the first user message.</item>
/// <item><c>alpaca</c>: a preamble (the system message, or Alpaca's), then <c>### Instruction:</c>, <c>### Input:</c> and
/// <c>### Response:</c> sections separated by blank lines. It has no end-of-turn marker; append EOS when training.</item>
/// </list>
/// </remarks>
public sealed class ChatFormat
{
    private const string AlpacaPreamble =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

    private const string AlpacaPreambleWithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.";

    /// <summary>ChatML, used by Qwen2 and SmolLM.</summary>
    public static readonly ChatFormat ChatML = new("chatml", hasEndOfTurnMarker: true);

    /// <summary>The Llama 3 instruct format.</summary>
    public static readonly ChatFormat Llama3 = new("llama3", hasEndOfTurnMarker: true);

    /// <summary>The Llama 2 chat format.</summary>
    public static readonly ChatFormat Llama2 = new("llama2", hasEndOfTurnMarker: true);

    /// <summary>The Mistral instruct format.</summary>
    public static readonly ChatFormat Mistral = new("mistral", hasEndOfTurnMarker: true);

    /// <summary>The Stanford Alpaca instruction format.</summary>
    public static readonly ChatFormat Alpaca = new("alpaca", hasEndOfTurnMarker: false);

    private static readonly ChatFormat[] All = [ChatML, Llama3, Llama2, Mistral, Alpaca];

    private ChatFormat(string name, bool hasEndOfTurnMarker)
    {
        Name = name;
        HasEndOfTurnMarker = hasEndOfTurnMarker;
    }

    /// <summary>The format's name, as <see cref="Get"/> takes it.</summary>
    public string Name { get; }

    /// <summary>
    /// Whether each assistant turn ends with a marker in the text (<c>&lt;|im_end|&gt;</c>, <c>&lt;|eot_id|&gt;</c>,
    /// <c>&lt;/s&gt;</c>); when false, training data should append EOS so the model learns to stop.
    /// </summary>
    public bool HasEndOfTurnMarker { get; }

    /// <summary>The names of all formats.</summary>
    public static IReadOnlyList<string> Names { get; } = [.. All.Select(f => f.Name)];

    /// <summary>Finds a format by name, ignoring case.</summary>
    /// <param name="name">chatml, llama3, llama2, mistral or alpaca.</param>
    /// <returns>The format.</returns>
    /// <exception cref="ArgumentException">No format has that name; the message lists them.</exception>
    public static ChatFormat Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return All.FirstOrDefault(f => string.Equals(f.Name, name, StringComparison.OrdinalIgnoreCase))
            ?? throw new ArgumentException($"Unknown chat format '{name}'; known formats: {string.Join(", ", Names)}.", nameof(name));
    }

    /// <summary>
    /// Recognises the format family of a Jinja <c>chat_template</c> by the markers it writes: <c>&lt;|im_start|&gt;</c>
    /// (chatml), <c>&lt;|start_header_id|&gt;</c> (llama3), <c>&lt;&lt;SYS&gt;&gt;</c> (llama2), <c>[INST]</c>
    /// (mistral), <c>### Instruction</c> (alpaca).
    /// </summary>
    /// <param name="chatTemplate">The template text.</param>
    /// <returns>The format, or null when none is recognised.</returns>
    public static ChatFormat? Detect(string chatTemplate)
    {
        ArgumentNullException.ThrowIfNull(chatTemplate);
        // Llama 2 templates also contain [INST], so <<SYS>> is checked before it.
        if (chatTemplate.Contains("<|im_start|>", StringComparison.Ordinal)) return ChatML;
        if (chatTemplate.Contains("<|start_header_id|>", StringComparison.Ordinal)) return Llama3;
        if (chatTemplate.Contains("<<SYS>>", StringComparison.Ordinal)) return Llama2;
        if (chatTemplate.Contains("[INST]", StringComparison.Ordinal)) return Mistral;
        if (chatTemplate.Contains("### Instruction", StringComparison.Ordinal)) return Alpaca;
        return null;
    }

    /// <summary>Renders a conversation.</summary>
    /// <param name="messages">The messages in order; a "system" message may only come first.</param>
    /// <param name="addGenerationPrompt">Whether to end with the header that opens an assistant reply, for generation.</param>
    /// <returns>The text and the spans of the assistant replies.</returns>
    /// <exception cref="ArgumentException">A message is null, has a role the format does not know, or a system message is not first.</exception>
    public ChatRendering Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        for (int i = 0; i < messages.Count; i++)
        {
            var message = messages[i] ?? throw new ArgumentException($"Message {i} is null.", nameof(messages));
            if (message.Role is null || message.Content is null)
            {
                throw new ArgumentException($"Message {i} has a null role or content.", nameof(messages));
            }
            if (message.Role == "system" && i > 0)
            {
                throw new ArgumentException($"Message {i} is a system message; only the first message may be one.", nameof(messages));
            }
        }

        var writer = new Writer();
        switch (Name)
        {
            case "chatml":
                foreach (var m in messages)
                {
                    writer.Append($"<|im_start|>{m.Role}\n");
                    writer.Append(m.Content + "<|im_end|>", m.Role == "assistant");
                    writer.Append("\n");
                }
                if (addGenerationPrompt) writer.Append("<|im_start|>assistant\n");
                break;
            case "llama3":
                foreach (var m in messages)
                {
                    writer.Append($"<|start_header_id|>{m.Role}<|end_header_id|>\n\n");
                    writer.Append(m.Content.Trim() + "<|eot_id|>", m.Role == "assistant");
                }
                if (addGenerationPrompt) writer.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
                break;
            case "llama2":
            case "mistral":
                RenderInst(messages, writer, llama2: Name == "llama2");
                break;
            default:
                RenderAlpaca(messages, writer, addGenerationPrompt);
                break;
        }
        return new ChatRendering(writer.Text.ToString(), writer.Spans);
    }

    /// <summary>
    /// Llama 2 and Mistral: each user message is wrapped in <c>[INST] … [/INST]</c> and each reply ends with
    /// <c>&lt;/s&gt;</c>. A reply is already the generation prompt's continuation, so nothing is added for it.
    /// </summary>
    private static void RenderInst(IReadOnlyList<ChatMessage> messages, Writer writer, bool llama2)
    {
        string? system = messages.Count > 0 && messages[0].Role == "system" ? messages[0].Content : null;
        bool firstUser = true;
        for (int i = system is null ? 0 : 1; i < messages.Count; i++)
        {
            var m = messages[i];
            switch (m.Role)
            {
                case "user":
                    string content = m.Content;
                    if (firstUser && system is not null)
                    {
                        content = llama2 ? $"<<SYS>>\n{system}\n<</SYS>>\n\n{content}" : $"{system}\n\n{content}";
                    }
                    firstUser = false;
                    // Llama 2 opens every turn with BOS; the first one comes from the tokenizer.
                    string bos = llama2 && writer.Text.Length > 0 ? "<s>" : "";
                    writer.Append($"{bos}[INST] {(llama2 ? content.Trim() : content)} [/INST]");
                    break;
                case "assistant":
                    // Llama 2's reply starts with a space; it is inside the span so the prompt ends right at "]".
                    writer.Append(llama2 ? $" {m.Content.Trim()} </s>" : $"{m.Content}</s>", assistant: true);
                    break;
                default:
                    throw new ArgumentException(
                        $"Message {i} has role '{m.Role}'; the {(llama2 ? "llama2" : "mistral")} format takes system, user and assistant.", nameof(messages));
            }
        }
    }

    private static void RenderAlpaca(IReadOnlyList<ChatMessage> messages, Writer writer, bool addGenerationPrompt)
    {
        bool hasInput = messages.Any(m => m.Role == "input");
        bool hasSystem = messages.Count > 0 && messages[0].Role == "system";
        writer.Append((hasSystem ? messages[0].Content : hasInput ? AlpacaPreambleWithInput : AlpacaPreamble) + "\n\n");
        for (int i = hasSystem ? 1 : 0; i < messages.Count; i++)
        {
            var m = messages[i];
            switch (m.Role)
            {
                case "user":
                    writer.Append($"### Instruction:\n{m.Content}\n\n");
                    break;
                case "input":
                    writer.Append($"### Input:\n{m.Content}\n\n");
                    break;
                case "assistant":
                    writer.Append("### Response:\n");
                    writer.Append(m.Content, assistant: true);
                    if (i + 1 < messages.Count || addGenerationPrompt)
                    {
                        writer.Append("\n\n");
                    }
                    break;
                default:
                    throw new ArgumentException($"Message {i} has role '{m.Role}'; the alpaca format takes system, user, input and assistant.", nameof(messages));
            }
        }
        if (addGenerationPrompt)
        {
            writer.Append("### Response:\n");
        }
    }

    /// <summary>Accumulates text and records the spans of assistant parts.</summary>
    private sealed class Writer
    {
        public StringBuilder Text { get; } = new();

        public List<CharSpan> Spans { get; } = [];

        public void Append(string text, bool assistant = false)
        {
            if (assistant)
            {
                Spans.Add(new CharSpan(Text.Length, text.Length));
            }
            Text.Append(text);
        }
    }
}
