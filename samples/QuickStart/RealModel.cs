using System.Globalization;
using PeftGen.Data;
using PeftGen.Generation;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Quantization;
using PeftGen.Text;
using PeftGen.Training;

namespace PeftGen.Samples.QuickStart;

/// <summary>
/// The QuickStart's real-model mode: <c>--model &lt;folder or .bin&gt; --data &lt;jsonl&gt;</c> fine-tunes a Hugging Face
/// Llama-family folder (TinyLlama, SmolLM, …) or a llama2.c checkpoint with QLoRA (NF4 + double quantization, LoRA on
/// all linear layers) through the same <see cref="FineTuneSession"/> as <c>peftgen train</c>, and shows greedy
/// generations for prompts from the dataset before and after.
/// </summary>
internal static class RealModel
{
    private const string Usage = """
        Usage: QuickStart [--model <folder or .bin> --data <jsonl> [options]]

        Without arguments: the built-in digit demo (no downloads).
        With --model and --data: QLoRA fine-tuning of a real model.
          --model <path>         Hugging Face model folder (config.json + model.safetensors) or llama2.c checkpoint (.bin)
          --data <path>          JSONL: {"text": …}, {"instruction": …, "output": …} or {"messages": […]} per line
          --tokenizer <path>     tokenizer.json or llama2.c tokenizer (default: found beside the model)
          --steps <n>            optimizer steps (default 100)
          --rank <r>             LoRA rank (default 8; alpha = 2r)
          --lr <x>               learning rate (default 2e-4)
          --batch-size <n>       rows per step (default 4)
          --max-length <n>       most tokens per example (default 256)
          --chat-format <name>   chatml, llama3, llama2, mistral or alpaca (default: from the tokenizer, else alpaca/chatml)
          --output <folder>      where adapter/, metrics.jsonl and loss.svg go (default quickstart-output)
        Exit codes: 0 success, 1 bad input (the message names the file or setting), 2 usage.
        """;

    public static int Run(string[] args)
    {
        Dictionary<string, string> values;
        try
        {
            values = Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }
        if (values.ContainsKey("--help"))
        {
            Console.WriteLine(Usage);
            return 0;
        }
        try
        {
            return FineTune(values);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException or FormatException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static int FineTune(Dictionary<string, string> values)
    {
        int rank = Int(values, "--rank", 8);
        var options = new FineTuneOptions
        {
            ModelPath = values["--model"],
            TokenizerPath = values.GetValueOrDefault("--tokenizer"),
            DataPath = values["--data"],
            OutputDir = values.GetValueOrDefault("--output", "quickstart-output"),
            LoRA = new LoRAConfig { Rank = rank, Alpha = 2 * rank, Dropout = 0.05f, Targets = TargetModules.AllLinear },
            Quantization = new QuantizationConfig(),
            Dataset = new JsonlDatasetOptions
            {
                MaxSequenceLength = Int(values, "--max-length", 256),
                ChatFormat = values.TryGetValue("--chat-format", out var format) ? ChatFormat.Get(format) : null,
            },
            BatchSize = Int(values, "--batch-size", 4),
            Trainer = new TrainerOptions
            {
                MaxSteps = Int(values, "--steps", 100),
                LearningRate = Float(values, "--lr", 2e-4f),
                WarmupSteps = Math.Max(1, Int(values, "--steps", 100) * 3 / 100),
            },
        };

        Console.WriteLine($"PeftGen QuickStart — QLoRA fine-tuning of {options.ModelPath} on {options.DataPath}");
        using var session = FineTuneSession.Open(options);
        var config = session.Model.Config;
        Console.WriteLine($"   model: {config.NumHiddenLayers} layers, hidden {config.HiddenSize}, vocab {config.VocabSize}, context {config.MaxPositionEmbeddings}");
        Console.WriteLine($"   adapter: NF4 + double quantization, LoRA r={rank} alpha={2 * rank} on {session.Peft.Plan().Count} linear layers; {session.Peft.TrainableParametersSummary()}");
        Console.WriteLine($"   data: {session.Dataset.Examples.Count} {session.Dataset.Kind.ToString().ToLowerInvariant()} examples{(session.Dataset.ChatFormat is { } f ? $" in the {f.Name} format" : "")}, {session.TrainBatches.BatchesPerEpoch} batches of {options.BatchSize} per epoch");
        Console.WriteLine();

        var samples = session.SamplePrompts(3);
        var sampling = SamplingOptions.Greedy(48);
        var before = samples.Select(s => session.Generate(s.PromptIds, sampling)).ToList();
        var result = session.Train(new TrainingProgressBar(Console.Out, !Console.IsOutputRedirected, prefix: "   "));
        var losses = result.Training.Losses.Where(float.IsFinite).ToList();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"   {result.Training.Losses.Count} steps in {result.Elapsed.TotalSeconds:F1} s, loss {losses.FirstOrDefault():F4} → {losses.LastOrDefault():F4}"));
        Console.WriteLine();
        for (int i = 0; i < samples.Count; i++)
        {
            Console.WriteLine($"   prompt:   {OneLine(samples[i].Prompt)}");
            Console.WriteLine($"   dataset:  {OneLine(samples[i].Expected)}");
            Console.WriteLine($"   before:   {OneLine(before[i])}");
            Console.WriteLine($"   after:    {OneLine(session.Generate(samples[i].PromptIds, sampling))}");
            Console.WriteLine();
        }
        Console.WriteLine($"Saved: {Path.GetFullPath(result.AdapterDir)} (PEFT format), {Path.GetFullPath(result.MetricsPath)}, {Path.GetFullPath(result.LossCurvePath)}");
        return 0;
    }

    private static Dictionary<string, string> Parse(string[] args)
    {
        string[] known = ["--model", "--data", "--tokenizer", "--steps", "--rank", "--lr", "--batch-size", "--max-length", "--chat-format", "--output"];
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] is "--help" or "-h" or "-?")
            {
                values["--help"] = "";
                continue;
            }
            if (!known.Contains(args[i])) throw new ArgumentException($"unknown argument '{args[i]}'");
            if (i + 1 >= args.Length) throw new ArgumentException($"{args[i]} needs a value");
            values[args[i]] = args[++i];
        }
        if (!values.ContainsKey("--help") && !(values.ContainsKey("--model") && values.ContainsKey("--data")))
            throw new ArgumentException("--model and --data go together (without arguments the built-in demo runs)");
        return values;
    }

    private static int Int(Dictionary<string, string> values, string name, int fallback) =>
        !values.TryGetValue(name, out var text) ? fallback
        : int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v
        : throw new ArgumentException($"{name} '{text}' is not an integer.");

    private static float Float(Dictionary<string, string> values, string name, float fallback) =>
        !values.TryGetValue(name, out var text) ? fallback
        : float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float v) ? v
        : throw new ArgumentException($"{name} '{text}' is not a number.");

    private static string OneLine(string text) => text.ReplaceLineEndings(" ⏎ ").Trim();
}
