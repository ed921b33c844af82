using System.CommandLine;
using System.Diagnostics;
using PeftGen.Generation;
using PeftGen.IO;
using PeftGen.Text;

namespace PeftGen.Cli;

/// <summary><c>peftgen generate</c>: continue a prompt with a model and print prompt + continuation.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<FileInfo>("--model") { Description = "llama2.c checkpoint (.bin)", Required = true };
        var tokenizer = new Option<FileInfo>("--tokenizer") { Description = "llama2.c tokenizer (tokenizer.bin / tok512.bin)", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "text to continue (empty: start from BOS)", DefaultValueFactory = _ => "" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "tokens to generate", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy; higher = more random", DefaultValueFactory = _ => 1f };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass in (0, 1]; 1 disables", DefaultValueFactory = _ => 0.9f };
        var seed = new Option<int>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 0 };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var command = new Command("generate", "Generate text from a prompt.")
        {
            model, tokenizer, prompt, maxTokens, temperature, topP, seed, threads,
        };
        command.SetAction((parse, cancellationToken) => Task.FromResult(CliErrors.Run(() =>
        {
            if (parse.GetValue(threads) is int n) Backends.Cpu.CpuParallel.MaxThreads = n;
            var options = new SamplingOptions
            {
                MaxNewTokens = parse.GetValue(maxTokens),
                Temperature = parse.GetValue(temperature),
                TopP = parse.GetValue(topP),
                Seed = parse.GetValue(seed),
            };
            var clock = Stopwatch.StartNew();
            using var llama = Llama2Checkpoint.Load(parse.GetValue(model)!.FullName);
            var tok = Llama2Tokenizer.Load(parse.GetValue(tokenizer)!.FullName, llama.Config.VocabSize);
            Console.Error.WriteLine($"loaded {parse.GetValue(model)!.Name}: {llama.CountParameters().Total:N0} parameters, {llama.Config.NumHiddenLayers} layers, in {clock.ElapsedMilliseconds} ms");
            var generator = new TextGenerator(llama, tok);
            var promptIds = tok.Encode(parse.GetValue(prompt) ?? "", addBos: true);
            clock.Restart();
            var ids = generator.GenerateIds(promptIds, options, cancellationToken);
            int generated = ids.Length - promptIds.Length;
            Console.Out.WriteLine(tok.Decode(ids));
            Console.Error.WriteLine($"{generated} tokens in {clock.Elapsed.TotalSeconds:F2} s ({generated / Math.Max(1e-9, clock.Elapsed.TotalSeconds):F1} tokens/s)");
            return 0;
        })));
        return command;
    }
}
