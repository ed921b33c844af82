using System.CommandLine;
using System.Diagnostics;
using PeftGen.Generation;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>
/// <c>peftgen generate</c>: continue a prompt with a model (and optionally an adapter of any method) and print prompt +
/// continuation; with --chat-format or --system, send the prompt as one chat message and print only the reply.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var adapter = CommonOptions.Adapter();
        var quant = CommonOptions.InferenceQuant();
        var prompt = new Option<string>("--prompt") { Description = "text to continue (empty: start from BOS); with --chat-format or --system, the user's message", DefaultValueFactory = _ => "" };
        var chatFormat = new Option<string?>("--chat-format")
        {
            Description = $"send --prompt as one chat message in this format ({string.Join(", ", ChatTemplate.Names)}, or auto: from the tokenizer's chat_template) and print only the reply",
        };
        var system = new Option<string?>("--system") { Description = "system prompt of the chat message (implies --chat-format auto unless given)" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "tokens to generate", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy; higher = more random", DefaultValueFactory = _ => 1f };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass in (0, 1]; 1 disables", DefaultValueFactory = _ => 0.9f };
        var seed = new Option<int>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 0 };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("generate", "Generate text from a prompt, with or without a PEFT adapter.")
        {
            model, tokenizer, adapter, quant, prompt, chatFormat, system, maxTokens, temperature, topP, seed, device, threads,
        };
        command.SetAction((parse, cancellationToken) => Task.FromResult(CliErrors.Run(() =>
        {
            // Settings are checked before anything loads, in the options' own names.
            int maxTokensValue = parse.GetValue(maxTokens);
            float temperatureValue = parse.GetValue(temperature), topPValue = parse.GetValue(topP);
            CommonOptions.Require(maxTokensValue >= 0, "--max-tokens", maxTokensValue, "must be ≥ 0 (the number of tokens to generate)");
            CommonOptions.Require(temperatureValue >= 0 && float.IsFinite(temperatureValue), "--temperature", temperatureValue, "must be a finite value ≥ 0 (0 = greedy)");
            CommonOptions.Require(topPValue > 0 && topPValue <= 1, "--top-p", topPValue, "must be in (0, 1] (1 disables nucleus sampling)");
            string? formatName = parse.GetValue(chatFormat) ?? (parse.GetValue(system) != null ? ChatTemplate.Auto : null);
            ChatTemplate.CheckName(formatName);
            var quantization = CommonOptions.Quantization(parse.GetValue(quant)!);
            string? adapterFolder = parse.GetValue(adapter);
            if (adapterFolder != null) AdapterFolders.CheckQuantization(AdapterFolders.Detect(adapterFolder), quantization);
            var target = ComputeDevice.RequireForGeneration(CommonOptions.Prepare(parse, device, threads));
            var options = new SamplingOptions
            {
                MaxNewTokens = parse.GetValue(maxTokens),
                Temperature = parse.GetValue(temperature),
                TopP = parse.GetValue(topP),
                Seed = parse.GetValue(seed),
            };
            var clock = Stopwatch.StartNew();
            using var pretrained = AdapterFolders.LoadForInference(parse.GetValue(model)!, parse.GetValue(tokenizer), target, adapterFolder, quantization);
            int generated;
            if (formatName != null)
            {
                // One chat message: rendered in the format, and only the reply printed.
                var template = ChatTemplate.Resolve(formatName, pretrained.Tokenizer, pretrained.TokenizerPath);
                var messages = new List<Text.ChatMessage>();
                if (parse.GetValue(system) is { } systemPrompt) messages.Add(new Text.ChatMessage("system", systemPrompt));
                messages.Add(new Text.ChatMessage("user", parse.GetValue(prompt) ?? ""));
                var chatIds = pretrained.Tokenizer.Encode(template.Render(messages), addBos: true);
                clock.Restart();
                var reply = template.Generate(pretrained.Model, pretrained.Tokenizer, chatIds, options, cancellationToken);
                if (reply.Cancelled) throw new OperationCanceledException(cancellationToken);
                generated = reply.Tokens;
                Console.Out.WriteLine(reply.Text);
            }
            else
            {
                var generator = new TextGenerator(pretrained.Model, pretrained.Tokenizer);
                var promptIds = pretrained.Tokenizer.Encode(parse.GetValue(prompt) ?? "", addBos: true);
                clock.Restart();
                var ids = generator.GenerateIds(promptIds, options, cancellationToken);
                generated = ids.Length - promptIds.Length;
                Console.Out.WriteLine(pretrained.Tokenizer.Decode(ids));
            }
            Console.Error.WriteLine($"{generated} tokens in {clock.Elapsed.TotalSeconds:F2} s ({generated / Math.Max(1e-9, clock.Elapsed.TotalSeconds):F1} tokens/s)");
            return 0;
        })));
        return command;
    }
}
