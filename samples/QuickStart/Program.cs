// PeftGen QuickStart: QLoRA on the CPU.
//
// With no arguments (no downloads, well under a minute on 2 cores): the model is declared with PeftGen's attributes
// (DigitCounter.cs): its shapes come from digits-config.json and its QLoRA adapter from [LoRA], [Quantize] and
// [LoRAPlus]; the source generator turns them into code at compile time.
// 1. The tiny Llama is pretrained (all weights) to continue digit sequences that count UP by 1, 2 or 3 (mod 10).
// 2. QLoRA: ApplyAdapters() quantizes its linear layers to 4-bit NF4 (double quantization) and freezes them; LoRA
//    adapters on all seven projections are trained on countdown.jsonl to count DOWN, a behaviour the base model has
//    never seen, through the same dataset and trainer path as `peftgen train` (FineTuneSession), with the LoRA+ ratio
//    [LoRAPlus] declares.
// 3. The same model then counts down with the adapter and up again with the adapter disabled; the adapter (PEFT
//    format), metrics.jsonl and loss.svg are in quickstart-output/.
//
// With --model <folder or .bin> --data <jsonl> it fine-tunes a real model with QLoRA instead (see --help).
using System.Diagnostics;
using System.Globalization;
using PeftGen.Data;
using PeftGen.Models.Llama;
using PeftGen.Samples.QuickStart;
using PeftGen.Training;

if (args.Length > 0)
    return RealModel.Run(args);

var total = Stopwatch.StartNew();
bool interactive = !Console.IsOutputRedirected;
using var model = new DigitCounter();
var config = model.Config;
int[][] up = [[3, 4], [0, 2], [7, 0]];
int[][] down = [[5, 4], [9, 7], [2, 9]];

Console.WriteLine($"PeftGen QuickStart — a {config.NumHiddenLayers}-layer Llama ({model.CountParameters().Total:N0} parameters) on the CPU");
Console.WriteLine();
Console.WriteLine("1. Pretraining the base model to count up (steps +1, +2, +3)");
var countUp = new DigitTask([1, 2, 3], seed: 1);
var pretrainOptions = new TrainerOptions { MaxSteps = 200, LearningRate = 3e-3f, Schedule = "cosine", WarmupSteps = 10, MaxGradNorm = 1f };
var clock = Stopwatch.StartNew();
TrainResult pretrained;
using (var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length),
           BatchSource.FromFunction(p => countUp.BatchAt(p, batchSize: 16, config.MaxPositionEmbeddings)), pretrainOptions))
    pretrained = trainer.Train(new TrainingProgressBar(Console.Out, interactive, prefix: "   "));
Console.WriteLine($"   base: {pretrainOptions.MaxSteps} steps in {clock.Elapsed.TotalSeconds:F1} s, loss {pretrained.Losses[0]:F3} → {pretrained.Losses[^1]:F4} (chance {Math.Log(10):F3})");
Console.WriteLine();
Show("base model", model, up.Concat(down));

Console.WriteLine("2. QLoRA: NF4 + double-quantized frozen base, LoRA r=8 on all linear layers, learning to count down (−1, −2, −3)");
Console.WriteLine($"   DigitCounter.AdapterPlan, computed at compile time from its attributes and {DigitCounter.ConfigFile}:");
foreach (var layer in DigitCounter.AdapterPlan)
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"     {layer.Path,-32} [{layer.OutFeatures,3}, {layer.InFeatures,3}]{(layer.Quantized ? " NF4" : "")}  r={layer.Rank} scaling {layer.Scaling:G3}  +{layer.TrainableParameters,5:N0}"));
Console.WriteLine($"   DigitCounter.TrainableParameterCount = {DigitCounter.TrainableParameterCount:N0}");
var peft = model.ApplyAdapters();
Console.WriteLine($"   ApplyAdapters(): {peft.TrainableParametersSummary()}");
var fineTune = new FineTuneOptions
{
    DataPath = Path.Combine(AppContext.BaseDirectory, "countdown.jsonl"),
    OutputDir = "quickstart-output",
    // Rows are bare digit sequences, as in pretraining: no BOS or EOS, 16 digits = 15 inputs + the last target.
    Dataset = new JsonlDatasetOptions { Kind = DatasetKind.Text, AddBos = false, AddEos = false, MaxSequenceLength = config.MaxPositionEmbeddings - 1 },
    BatchSize = 16,
    Seed = 2,
    // [LoRAPlus(4)] on DigitCounter needs no setting here: the trainer of an adapted DigitCounter applies what its attributes declare.
    Trainer = new TrainerOptions { MaxSteps = 200, LearningRate = 1e-2f, Schedule = "cosine", WarmupSteps = 10, MaxGradNorm = 1f },
    BaseModelName = "peftgen/quickstart-digits",
};
using (var session = FineTuneSession.Create(peft, new DigitTokenizer(), fineTune))
{
    Console.WriteLine($"   data: {Path.GetFileName(fineTune.DataPath)}, {session.Dataset.Examples.Count} count-down sequences (JsonlDataset → DatasetBatchSource → Trainer)");
    var result = session.Train(new TrainingProgressBar(Console.Out, interactive, prefix: "   "));
    var losses = result.Training.Losses;
    Console.WriteLine($"   adapter: {losses.Count} steps in {result.Elapsed.TotalSeconds:F1} s, loss {losses[0]:F3} → {losses[^1]:F4} (the second digit picks the step, so ≈ {Math.Log(3) / 15:F3} is the floor)");
    Console.WriteLine();
    Show("with the QLoRA adapter", model, down.Concat(up),
        note: "it learned only to count down, so the count-up prompts show how far it overrides the base's skill");
    using (peft.DisableAdapters())
        Show("same model, adapter disabled", model, down);

    Console.WriteLine($"3. Saved to {Path.GetFullPath(fineTune.OutputDir)}:");
    Console.WriteLine($"     adapter/ in Hugging Face PEFT format (loadable with peft.PeftModel.from_pretrained)");
    foreach (var file in Directory.GetFiles(result.AdapterDir).Order())
        Console.WriteLine($"       {Path.GetFileName(file),-28} {new FileInfo(file).Length,8:N0} bytes");
    Console.WriteLine($"     {Path.GetFileName(result.MetricsPath),-30} one JSON line per step (loss, lr, tokens/s, elapsed)");
    Console.WriteLine($"     {Path.GetFileName(result.LossCurvePath),-30} the loss curve");
}
Console.WriteLine();
Console.WriteLine($"Done in {total.Elapsed.TotalSeconds:F1} s. Fine-tune a real model: dotnet run -c Release --project samples/QuickStart -- --model <folder> --data <jsonl>");
return 0;

static void Show(string title, LlamaForCausalLM model, IEnumerable<int[]> prompts, string? note = null)
{
    Console.WriteLine($"   {title}: greedy continuations of two-digit prompts{(note != null ? $" ({note})" : "")}");
    foreach (var prompt in prompts)
    {
        var got = DigitTask.Complete(model, prompt, 8).Skip(prompt.Length).ToArray();
        var expected = DigitTask.Expected(prompt, 8).ToArray();
        int step = ((prompt[1] - prompt[0]) % 10 + 10) % 10;                      // +1..+3 count up, +7..+9 count down
        string task = step <= 3 ? $"counting up by {step}" : $"counting down by {10 - step}";
        bool right = got.SequenceEqual(expected);
        Console.WriteLine($"     {string.Join(' ', prompt)} → {string.Join(' ', got)}   {(right ? "✓" : "✗")} {task}{(right ? "" : $" gives {string.Join(' ', expected)}")}");
    }
    Console.WriteLine();
}
