using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PeftGen.Generation;
using PeftGen.Models.Llama;
using PeftGen.Text;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>
/// <c>peftgen chat</c>: an interactive conversation with a model (and optionally an adapter of any method). Each line
/// read from standard input is a user message; the reply streams to stdout as it is generated, one reply per line.
/// The conversation is rendered with the chat format of the tokenizer's chat_template or --chat-format, and kept within
/// the model's context by dropping the oldest turns first. Ctrl-C stops the reply being written (the session goes on);
/// Ctrl-D (end of input) ends the session.
/// </summary>
internal static class ChatCommand
{
    private static CancellationTokenSource? _reply;

    /// <summary>Tests see each generated token here (the tests run one at a time).</summary>
    internal static Action<int>? OnTokenForTests { get; set; }

    /// <summary>Stops the reply being generated, as Ctrl-C does; nothing happens between replies.</summary>
    internal static void CancelCurrentReply() => Volatile.Read(ref _reply)?.Cancel();

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var adapter = CommonOptions.Adapter();
        var quant = CommonOptions.InferenceQuant();
        var chatFormat = new Option<string>("--chat-format")
        {
            Description = $"how turns become a prompt: {string.Join(", ", ChatTemplate.Names)} (none: plain text, each message a line that the reply continues), or auto: the format recognised in the tokenizer's chat_template (tokenizer_config.json; there is no Jinja engine, so a template must be one of these formats)",
            DefaultValueFactory = _ => ChatTemplate.Auto,
        };
        var system = new Option<string?>("--system") { Description = "system prompt, kept at the start of the conversation" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "most tokens per reply", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy; higher = more random", DefaultValueFactory = _ => 1f };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass in (0, 1]; 1 disables", DefaultValueFactory = _ => 0.9f };
        var seed = new Option<int>("--seed") { Description = "sampling seed (reply n, counted from 0, samples with seed + n)", DefaultValueFactory = _ => 0 };
        var threads = CommonOptions.Threads();
        var command = new Command("chat", "Chat with a model (and an adapter): one message per line on standard input, replies streamed to stdout; Ctrl-C stops a reply, Ctrl-D ends the session.")
        {
            model, tokenizer, adapter, quant, chatFormat, system, maxTokens, temperature, topP, seed, threads,
        };
        command.SetAction((parse, cancellationToken) => Task.FromResult(CliErrors.Run(() =>
        {
            int maxTokensValue = parse.GetValue(maxTokens);
            float temperatureValue = parse.GetValue(temperature), topPValue = parse.GetValue(topP);
            CommonOptions.Require(maxTokensValue >= 1, "--max-tokens", maxTokensValue, "must be ≥ 1 (the most tokens of a reply)");
            CommonOptions.Require(temperatureValue >= 0 && float.IsFinite(temperatureValue), "--temperature", temperatureValue, "must be a finite value ≥ 0 (0 = greedy)");
            CommonOptions.Require(topPValue > 0 && topPValue <= 1, "--top-p", topPValue, "must be in (0, 1] (1 disables nucleus sampling)");
            string formatName = parse.GetValue(chatFormat)!;
            ChatTemplate.CheckName(formatName);
            if (parse.GetValue(threads) is int n)
            {
                CommonOptions.Require(n >= 1, "--threads", n, "must be ≥ 1");
                Backends.Cpu.CpuParallel.MaxThreads = n;
            }
            var quantization = CommonOptions.Quantization(parse.GetValue(quant)!);
            string? adapterFolder = parse.GetValue(adapter);
            if (adapterFolder != null) AdapterFolders.CheckQuantization(AdapterFolders.Detect(adapterFolder), quantization);

            using var loaded = AdapterFolders.LoadForInference(parse.GetValue(model)!, parse.GetValue(tokenizer), Tensors.Device.Cpu, adapterFolder, quantization);
            var template = ChatTemplate.Resolve(formatName, loaded.Tokenizer, loaded.TokenizerPath);
            var session = new ChatSession(loaded.Model, loaded.Tokenizer, template, parse.GetValue(system), maxTokensValue);
            var sampling = new SamplingOptions { Temperature = temperatureValue, TopP = topPValue, Seed = parse.GetValue(seed) };
            bool interactive = !Console.IsInputRedirected;
            Console.Error.WriteLine(Invariant($"chat: {template.Name} format (from {template.Source}), context {session.Context} tokens, up to {maxTokensValue} per reply; temperature {temperatureValue}, top-p {topPValue}, seed {parse.GetValue(seed)}"));
            Console.Error.WriteLine("one message per line; Ctrl-C stops a reply, Ctrl-D (end of input) ends the session");

            ConsoleCancelEventHandler onCtrlC = (_, e) =>
            {
                // While a reply is written, Ctrl-C stops it and the session goes on; at the prompt it ends the program.
                if (Volatile.Read(ref _reply) is not { } reply) return;
                e.Cancel = true;
                reply.Cancel();
            };
            Console.CancelKeyPress += onCtrlC;
            try
            {
                for (int turn = 0; ;)
                {
                    if (interactive) Console.Error.Write("> ");
                    string? line = Console.In.ReadLine();
                    if (line == null) break; // Ctrl-D, or the end of redirected input
                    if (string.IsNullOrWhiteSpace(line)) continue;
                    cancellationToken.ThrowIfCancellationRequested();
                    using var reply = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    Volatile.Write(ref _reply, reply);
                    try
                    {
                        session.Respond(line, sampling with { Seed = sampling.Seed + turn++ }, reply.Token);
                    }
                    finally
                    {
                        Volatile.Write(ref _reply, null);
                    }
                    cancellationToken.ThrowIfCancellationRequested();
                }
            }
            finally
            {
                Console.CancelKeyPress -= onCtrlC;
            }
            if (interactive) Console.Error.WriteLine();
            return 0;
        })));
        return command;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    /// <summary>The conversation: its history within the context, and one reply per message.</summary>
    private sealed class ChatSession(LlamaForCausalLM model, ITokenizer tokenizer, ChatTemplate template, string? system, int maxTokens)
    {
        private readonly List<ChatMessage> _history = [];

        /// <summary>The positions a prompt and its reply share (the context less any virtual tokens of a prompt-learning adapter).</summary>
        public int Context { get; } = model.Config.MaxPositionEmbeddings - (model.Model.VirtualTokens?.Count ?? 0);

        /// <summary>
        /// Adds <paramref name="user"/> to the conversation and streams the reply to stdout (one line) with a note on
        /// stderr. The oldest turns are dropped until the prompt leaves room for a reply of --max-tokens tokens (or half
        /// the context, when that is less); a message that does not fit even alone is refused and forgotten.
        /// </summary>
        public void Respond(string user, SamplingOptions sampling, CancellationToken cancel)
        {
            _history.Add(new ChatMessage("user", user));
            int room = Math.Min(maxTokens, Context / 2);
            int dropped = 0;
            int[] ids = Encode();
            while (ids.Length > Context - room && _history.Count > 1)
            {
                _history.RemoveRange(0, 2); // the oldest user message and its reply
                dropped++;
                ids = Encode();
            }
            if (ids.Length >= Context)
            {
                _history.RemoveAt(_history.Count - 1);
                Console.Error.WriteLine($"[the message is {ids.Length} tokens with the format{(system != null ? " and the system prompt" : "")}; the context holds {Context}: write a shorter one]");
                return;
            }

            var clock = Stopwatch.StartNew();
            var reply = template.Generate(model, tokenizer, ids, sampling with { MaxNewTokens = Math.Min(maxTokens, Context - ids.Length) }, cancel,
                text =>
                {
                    Console.Out.Write(text);
                    Console.Out.Flush();
                },
                OnTokenForTests);
            Console.Out.WriteLine();
            Console.Out.Flush();
            _history.Add(new ChatMessage("assistant", template.HistoryText(reply)));
            double seconds = Math.Max(1e-9, clock.Elapsed.TotalSeconds);
            Console.Error.WriteLine(Invariant($"[{(reply.Cancelled ? "stopped after " : "")}{reply.Tokens} tokens, {reply.Tokens / seconds:F1} tokens/s; {ids.Length + reply.Tokens}/{Context} context tokens")
                + (dropped > 0 ? $"; dropped the {dropped} oldest turn{(dropped > 1 ? "s" : "")} to fit the context" : "") + "]");
        }

        private int[] Encode()
        {
            var messages = new List<ChatMessage>(_history.Count + 1);
            if (system != null) messages.Add(new ChatMessage("system", system));
            messages.AddRange(_history);
            return tokenizer.Encode(template.Render(messages), addBos: true);
        }
    }
}
