// PeftGen QuickStart: builds a tiny Llama, generates a synthetic task, trains on it on the CPU and shows the
// model learning. No downloads; runs in well under a minute on 2 cores.
//
// The task: sequences of digits that count up by a fixed step modulo 10 ("3 5 7 9 1 3 …"). Given the first
// two digits, the model must infer the step and continue the sequence.
using System.Diagnostics;
using PeftGen.Models.Llama;
using PeftGen.Samples.QuickStart;
using PeftGen.Training;

const int SequenceLength = 24;
var config = new LlamaConfig
{
    HiddenSize = 64, IntermediateSize = 172, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
    VocabSize = DigitTask.VocabSize, MaxPositionEmbeddings = SequenceLength, RmsNormEps = 1e-5f, TieWordEmbeddings = true,
};
using var model = new LlamaForCausalLM(config, seed: 42);
var (_, total) = model.CountParameters();
Console.WriteLine($"PeftGen QuickStart: a {config.NumHiddenLayers}-layer Llama ({total:N0} parameters) learns to continue digit sequences.");
Console.WriteLine();

int[][] prompts = [[3, 5], [7, 8], [0, 3], [9, 2]];
ShowCompletions("Before training", model, prompts, SequenceLength);

var task = new DigitTask(seed: 1);
var options = new TrainingOptions { Steps = 300, LearningRate = 3e-3f, WarmupSteps = 20, Schedule = "cosine", MaxGradNorm = 1f };
var clock = Stopwatch.StartNew();
var losses = TrainingLoop.Run(model, _ => task.NextBatch(batchSize: 16, SequenceLength), options, new ConsoleProgress());
Console.WriteLine($"Trained {options.Steps} steps in {clock.Elapsed.TotalSeconds:F1} s: loss {losses[0]:F3} → {losses[^1]:F3} (chance level {Math.Log(10):F3}).");
Console.WriteLine();
ShowCompletions("After training", model, prompts, SequenceLength);

static void ShowCompletions(string title, LlamaForCausalLM model, int[][] prompts, int length)
{
    Console.WriteLine($"{title} (greedy continuation of the first two digits):");
    foreach (var prompt in prompts)
    {
        var ids = DigitTask.Complete(model, prompt, 10);
        Console.WriteLine($"  {string.Join(' ', prompt)} → {string.Join(' ', ids.Skip(prompt.Length))}   (expected {string.Join(' ', DigitTask.Expected(prompt, 10))})");
    }
    Console.WriteLine();
}

/// <summary>Prints every 25th step as it happens (synchronously, unlike <see cref="Progress{T}"/>).</summary>
internal sealed class ConsoleProgress : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress p)
    {
        if (p.Step % 25 == 0 || p.Step == 1)
            Console.WriteLine($"  step {p.Step,4}/{p.TotalSteps}  loss {p.Loss:F4}  lr {p.LearningRate:E2}  |g| {p.GradNorm:F2}  {p.TokensPerSecond:N0} tok/s");
    }
}
