// PeftGen QuickStart: QLoRA on the CPU, no downloads, well under a minute on 2 cores.
//
// The model is declared with PeftGen's attributes (DigitCounter.cs): its shapes come from digits-config.json and its
// QLoRA adapter from [LoRA], [Quantize] and [LoRAPlus]; the source generator turns them into code at compile time.
// 1. The tiny Llama is pretrained (all weights) to continue digit sequences that count UP by 1, 2 or 3 (mod 10).
// 2. QLoRA: ApplyAdapters() quantizes its linear layers to 4-bit NF4 (double quantization) and freezes them; LoRA
//    adapters on all seven projections are trained to count DOWN — a behaviour the base model has never seen.
// 3. The same model then counts down with the adapter and up again with the adapter disabled.
using System.Diagnostics;
using System.Globalization;
using PeftGen.Adapters;
using PeftGen.Models.Llama;
using PeftGen.Samples.QuickStart;
using PeftGen.Training;

var total = Stopwatch.StartNew();
using var model = new DigitCounter();
var config = model.Config;
int[][] up = [[3, 4], [0, 2], [7, 0]];
int[][] down = [[5, 4], [9, 7], [2, 9]];

Console.WriteLine($"PeftGen QuickStart — a {config.NumHiddenLayers}-layer Llama ({model.CountParameters().Total:N0} parameters) on the CPU");
Console.WriteLine();
Console.WriteLine("1. Pretraining the base model to count up (steps +1, +2, +3)");
var countUp = new DigitTask([1, 2, 3], seed: 1);
Train(model, "base", countUp, new TrainerOptions { MaxSteps = 200, LearningRate = 3e-3f, Schedule = "cosine", WarmupSteps = 10, MaxGradNorm = 1f });
Show("base model", model, up.Concat(down));

Console.WriteLine("2. QLoRA: NF4 + double-quantized frozen base, LoRA r=8 on all linear layers, learning to count down (−1, −2, −3)");
Console.WriteLine($"   DigitCounter.AdapterPlan, computed at compile time from its attributes and {DigitCounter.ConfigFile}:");
foreach (var layer in DigitCounter.AdapterPlan)
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"     {layer.Path,-32} [{layer.OutFeatures,3}, {layer.InFeatures,3}]{(layer.Quantized ? " NF4" : "")}  r={layer.Rank} scaling {layer.Scaling:G3}  +{layer.TrainableParameters,5:N0}"));
Console.WriteLine($"   DigitCounter.TrainableParameterCount = {DigitCounter.TrainableParameterCount:N0}");
var peft = model.ApplyAdapters();
Console.WriteLine($"   ApplyAdapters(): {peft.TrainableParametersSummary()}");
var countDown = new DigitTask([9, 8, 7], seed: 2);
Train(model, "adapter", countDown, new TrainerOptions { MaxSteps = 200, LearningRate = 1e-2f, Schedule = "cosine", WarmupSteps = 10, MaxGradNorm = 1f, LoRAPlusRatio = DigitCounter.LoRAPlusRatio });
Show("with the QLoRA adapter", model, down.Concat(up));
using (peft.DisableAdapters())
    Show("same model, adapter disabled", model, down);

var adapterFolder = Path.Combine("quickstart-output", "adapter");
PeftAdapterFile.Save(peft, adapterFolder, baseModelNameOrPath: "peftgen/quickstart-digits");
Console.WriteLine($"3. Adapter saved in Hugging Face PEFT format (loadable with peft.PeftModel.from_pretrained): {Path.GetFullPath(adapterFolder)}");
foreach (var file in Directory.GetFiles(adapterFolder).Order())
    Console.WriteLine($"     {Path.GetFileName(file),-28} {new FileInfo(file).Length,8:N0} bytes");
Console.WriteLine();
Console.WriteLine($"Done in {total.Elapsed.TotalSeconds:F1} s.");

static void Train(LlamaForCausalLM model, string what, DigitTask task, TrainerOptions options)
{
    using var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length),
        BatchSource.FromFunction(p => task.BatchAt(p, batchSize: 16, model.Config.MaxPositionEmbeddings)), options);
    var clock = Stopwatch.StartNew();
    var result = trainer.Train(new ConsoleProgress());
    Console.WriteLine($"   {what}: {options.MaxSteps} steps in {clock.Elapsed.TotalSeconds:F1} s, loss {result.Losses[0]:F3} → {result.Losses[^1]:F4} (chance {Math.Log(10):F3})");
    Console.WriteLine();
}

static void Show(string title, LlamaForCausalLM model, IEnumerable<int[]> prompts)
{
    Console.WriteLine($"   {title}: greedy continuations of two-digit prompts");
    foreach (var prompt in prompts)
    {
        var got = DigitTask.Complete(model, prompt, 8).Skip(prompt.Length).ToArray();
        var expected = DigitTask.Expected(prompt, 8).ToArray();
        Console.WriteLine($"     {string.Join(' ', prompt)} → {string.Join(' ', got)}   {(got.SequenceEqual(expected) ? "✓" : $"(counting by {((prompt[1] - prompt[0]) % 10 + 10) % 10} mod 10 gives {string.Join(' ', expected)})")}");
    }
    Console.WriteLine();
}

/// <summary>Prints every 50th step as it happens (synchronously, unlike <see cref="Progress{T}"/>).</summary>
internal sealed class ConsoleProgress : IProgress<TrainerProgress>
{
    public void Report(TrainerProgress p)
    {
        if (p.Step % 50 == 0 || p.Step == 1)
            Console.WriteLine($"   step {p.Step,4}/{p.MaxSteps}  loss {p.Loss:F4}  lr {p.LearningRate:E2}  |g| {p.GradNorm:F2}  {p.TokensPerSecond:N0} tok/s");
    }
}
