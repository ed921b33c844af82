using System.CommandLine;
using System.Diagnostics;
using PeftGen.Generation;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary><c>peftgen generate</c>: continue a prompt with a model (and optionally a PEFT adapter) and print prompt + continuation.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var adapter = new Option<string?>("--adapter") { Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors) to apply" };
        var quant = CommonOptions.Quant("none", "4-bit storage, quantized while loading: with an adapter, of the layers it adapts (nf4/fp4 to match a QLoRA adapter's base); without one, of every linear layer but the head; none keeps the checkpoint's type");
        var prompt = new Option<string>("--prompt") { Description = "text to continue (empty: start from BOS)", DefaultValueFactory = _ => "" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "tokens to generate", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy; higher = more random", DefaultValueFactory = _ => 1f };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass in (0, 1]; 1 disables", DefaultValueFactory = _ => 0.9f };
        var seed = new Option<int>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 0 };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var command = new Command("generate", "Generate text from a prompt, with or without a PEFT adapter.")
        {
            model, tokenizer, adapter, quant, prompt, maxTokens, temperature, topP, seed, device, threads,
        };
        command.SetAction((parse, cancellationToken) => Task.FromResult(CliErrors.Run(() =>
        {
            // Settings are checked before anything loads, in the options' own names.
            int maxTokensValue = parse.GetValue(maxTokens);
            float temperatureValue = parse.GetValue(temperature), topPValue = parse.GetValue(topP);
            CommonOptions.Require(maxTokensValue >= 0, "--max-tokens", maxTokensValue, "must be ≥ 0 (the number of tokens to generate)");
            CommonOptions.Require(temperatureValue >= 0 && float.IsFinite(temperatureValue), "--temperature", temperatureValue, "must be a finite value ≥ 0 (0 = greedy)");
            CommonOptions.Require(topPValue > 0 && topPValue <= 1, "--top-p", topPValue, "must be in (0, 1] (1 disables nucleus sampling)");
            var target = ComputeDevice.RequireForGeneration(CommonOptions.Prepare(parse, device, threads));
            var options = new SamplingOptions
            {
                MaxNewTokens = parse.GetValue(maxTokens),
                Temperature = parse.GetValue(temperature),
                TopP = parse.GetValue(topP),
                Seed = parse.GetValue(seed),
            };
            var clock = Stopwatch.StartNew();
            using var pretrained = CommonOptions.LoadForInference(parse.GetValue(model)!, parse.GetValue(tokenizer), target,
                parse.GetValue(adapter), CommonOptions.Quantization(parse.GetValue(quant)!));
            var generator = new TextGenerator(pretrained.Model, pretrained.Tokenizer);
            var promptIds = pretrained.Tokenizer.Encode(parse.GetValue(prompt) ?? "", addBos: true);
            clock.Restart();
            var ids = generator.GenerateIds(promptIds, options, cancellationToken);
            int generated = ids.Length - promptIds.Length;
            Console.Out.WriteLine(pretrained.Tokenizer.Decode(ids));
            Console.Error.WriteLine($"{generated} tokens in {clock.Elapsed.TotalSeconds:F2} s ({generated / Math.Max(1e-9, clock.Elapsed.TotalSeconds):F1} tokens/s)");
            return 0;
        })));
        return command;
    }
}
