using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using PeftGen.Autograd;
using PeftGen.Backends.Cpu;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.Bottleneck;
using PeftGen.Methods.DeltaLoRA;
using PeftGen.Methods.IA3;
using PeftGen.Methods.LayerDrop;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Methods.Sparse;
using PeftGen.Methods.VeRA;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Training;

namespace PeftGen.Benchmarks;

/// <summary>
/// <c>methods</c>: every fine-tuning method on the same task and model, written to <c>docs/methods.md</c>.
/// <para>Quality: a small Llama is pretrained to continue digit sequences that count UP by 1, 2 or 3 (mod 10); each
/// method then fine-tunes it for the same number of steps to count DOWN, a behaviour the base has never seen; the table
/// gives trainable parameters, training tokens/s, the final training loss and the loss on held-out sequences.</para>
/// <para>Memory: the same method on a Llama shaped like stories15M (random weights, batch 4 × 256), three training
/// steps, peak resident memory of the process. Each method runs in its own child process so peaks do not mix.</para>
/// </summary>
internal static class MethodsBenchmark
{
    private static readonly string[] Methods =
    [
        "full", "lora", "qlora", "rslora", "dora", "lora-plus", "lora-fa", "vera", "delta-lora", "ia3",
        "prompt-tuning", "prefix-tuning", "p-tuning", "bottleneck", "sparse", "lora+layer-drop", "lora+layerwise-lr",
    ];

    private const int Batch = 16, Length = 24, Virtual = 8;

    public static int Run(string[] args)
    {
        var options = BenchmarkArgs.Parse(args, new()
        {
            ["steps"] = "150", ["out"] = "docs/methods.md", ["method"] = "", ["phase"] = "", ["base"] = "", ["threads"] = "2",
        });
        CpuParallel.MaxThreads = int.Parse(options["threads"], CultureInfo.InvariantCulture);
        int steps = int.Parse(options["steps"], CultureInfo.InvariantCulture);
        if (options["method"].Length > 0)
        {
            // Child: one method, one phase; prints one JSON line.
            var result = options["phase"] == "memory" ? Memory(options["method"]) : Quality(options["method"], options["base"], steps);
            Console.WriteLine(result.ToJsonString());
            return 0;
        }

        string baseFolder = Path.Combine(Path.GetTempPath(), $"peftgen-methods-base-{Environment.ProcessId}");
        try
        {
            Console.Error.WriteLine("methods: pretraining the base model to count up…");
            float baseLoss = Pretrain(baseFolder);
            var rows = new List<(JsonObject Quality, JsonObject Memory)>();
            foreach (string method in Methods)
            {
                Console.Error.WriteLine($"methods: {method}");
                var quality = Child(method, "quality", baseFolder, steps, options["threads"]);
                var memory = Child(method, "memory", baseFolder, steps, options["threads"]);
                Console.WriteLine(new JsonObject { ["benchmark"] = "methods", ["method"] = method, ["quality"] = quality.DeepClone(), ["memory_15m"] = memory.DeepClone() }.ToJsonString());
                rows.Add((quality, memory));
            }
            string markdown = Markdown(rows, steps, baseLoss);
            AtomicFile.WriteAllBytes(options["out"], Encoding.UTF8.GetBytes(markdown));
            Console.Error.WriteLine($"methods: wrote {Path.GetFullPath(options["out"])}");
            return 0;
        }
        finally
        {
            if (Directory.Exists(baseFolder)) Directory.Delete(baseFolder, recursive: true);
        }
    }

    // ---- the task ------------------------------------------------------------------------------------------------

    private static readonly LlamaConfig DigitsConfig = new()
    {
        VocabSize = 10, HiddenSize = 64, IntermediateSize = 176, NumHiddenLayers = 4, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        MaxPositionEmbeddings = Length + Virtual, TieWordEmbeddings = false, BosTokenId = 0, EosTokenId = 0,
    };

    /// <summary>Batch number <paramref name="position"/> of sequences counting by +steps (or −steps when <paramref name="down"/>).</summary>
    private static Batch DigitBatch(long position, bool down, int seed)
    {
        var random = new Random(unchecked((int)(position * 7919 + seed * 104_729 + (down ? 1 : 0))));
        var inputs = new int[Batch * Length];
        var targets = new int[Batch * Length];
        for (int b = 0; b < Batch; b++)
        {
            int start = random.Next(10), step = (1 + random.Next(3)) * (down ? -1 : 1);
            for (int t = 0; t < Length; t++)
            {
                inputs[b * Length + t] = Mod10(start + t * step);
                targets[b * Length + t] = Mod10(start + (t + 1) * step);
            }
        }
        return new Batch(inputs, targets, Batch, Length);
    }

    private static int Mod10(int value) => ((value % 10) + 10) % 10;

    private static float Pretrain(string folder)
    {
        using var model = new LlamaForCausalLM(DigitsConfig, seed: 1);
        using var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length),
            BatchSource.FromFunction(p => DigitBatch(p, down: false, seed: 1)),
            new TrainerOptions { MaxSteps = 300, LearningRate = 3e-3f, Schedule = "cosine", WarmupSteps = 10, MaxGradNorm = 1f });
        var result = trainer.Train();
        HuggingFaceLlama.Save(model, folder);
        return result.Losses[^1];
    }

    // ---- one method --------------------------------------------------------------------------------------------

    /// <summary>A method applied to a model: the adapted model the trainer trains, and the trainer settings it takes.</summary>
    private sealed class Applied
    {
        public required long Trainable { get; init; }
        public float LoRAPlusRatio { get; init; }
        public float LayerwiseDecay { get; init; } = 1f;
        /// <summary>The adapted model (its parameter groups, hooks and random generators); null for full fine-tuning.</summary>
        public IAdaptedModel? Adapted { get; init; }

        /// <summary>The trainer of the adapted model, or of every parameter of the model for full fine-tuning.</summary>
        public Trainer CreateTrainer(LlamaForCausalLM model, Func<Batch, Tensor> loss, IBatchSource train, TrainerOptions options)
        {
            options = options with { LoRAPlusRatio = LoRAPlusRatio, LayerwiseLearningRateDecay = LayerwiseDecay };
            return Adapted != null ? new Trainer(Adapted, train, options, loss: loss) : new Trainer(model, loss, train, options);
        }
    }

    private static Applied Apply(string method, LlamaForCausalLM model, Func<Batch, Tensor> loss, IBatchSource calibration, int rank, int dim)
    {
        var lora = new LoRAConfig { Rank = rank, Alpha = 2 * rank, Targets = TargetModules.AllLinear };
        long Count() => model.TrainableParameters().Sum(p => p.Count);
        Applied Lora(LoRAConfig config, QuantizationConfig? quantization = null, float ratio = 0, float decay = 1)
        {
            var peft = PeftModel.Create(model, config, quantization);
            return new Applied { Trainable = Count(), LoRAPlusRatio = ratio, LayerwiseDecay = decay, Adapted = peft };
        }

        switch (method)
        {
            case "full":
                return new Applied { Trainable = Count() };
            case "lora": return Lora(lora);
            case "qlora": return Lora(lora, new QuantizationConfig(QuantType.NF4, DoubleQuant: true, BlockSize: 64));
            case "rslora": return Lora(lora with { UseRsLoRA = true, Alpha = rank });
            case "dora": return Lora(lora with { UseDoRA = true });
            case "lora-plus": return Lora(lora, ratio: 16);
            case "lora-fa": return Lora(lora with { UseLoRAFA = true });
            case "lora+layerwise-lr": return Lora(lora, decay: 0.7f);
            case "delta-lora":
                // The trainer runs the Delta-LoRA updater the adapted model creates for it.
                return Lora(lora with { DeltaLoRA = new DeltaLoRAOptions { StartStep = 10, UpdateRatio = 2 } });
            case "lora+layer-drop":
            {
                var peft = PeftModel.Create(model, lora);
                LayerDropper.Apply(model, new LayerDropConfig { Probability = 0.1f, Seed = 3 });     // its generator joins peft.RandomGenerators
                return new Applied { Trainable = Count(), Adapted = peft };
            }
            case "vera":
            {
                var peft = VeraModel.Create(model, new VeraConfig { Rank = Math.Min(256, 4 * dim), Targets = TargetModules.AllLinear });
                return new Applied { Trainable = Count(), Adapted = peft };
            }
            case "ia3":
            {
                var ia3 = IA3Model.Create(model, new IA3Config());
                return new Applied { Trainable = Count(), Adapted = ia3 };
            }
            case "prompt-tuning":
                return PromptLearning(new PromptTuningConfig { NumVirtualTokens = Virtual });
            case "prefix-tuning":
                return PromptLearning(new PrefixTuningConfig { NumVirtualTokens = Virtual, PrefixProjection = true, EncoderHiddenSize = dim });
            case "p-tuning":
                return PromptLearning(new PTuningConfig { NumVirtualTokens = Virtual, EncoderHiddenSize = dim });
            case "bottleneck":
            {
                var bottleneck = BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = Math.Max(4, dim / 8) });
                return new Applied { Trainable = Count(), Adapted = bottleneck };
            }
            case "sparse":
            {
                var sparse = SparseFineTuning.Create(model, new SparseFineTuningConfig { Fraction = 0.02f, CalibrationBatches = 2 }, loss, calibration);
                return new Applied { Trainable = sparse.TrainableEntries, Adapted = sparse };
            }
            default:
                throw new ArgumentException($"unknown method '{method}' (known: {string.Join(", ", Methods)})");
        }

        Applied PromptLearning(PromptLearningConfig config)
        {
            var prompt = PromptLearningModel.Create(model, config);
            return new Applied { Trainable = prompt.TrainableParameters().Sum(p => p.Count), Adapted = prompt };
        }
    }

    private static float LearningRate(string method) => method switch
    {
        "full" or "sparse" => 1e-3f,
        "vera" or "ia3" => 2e-2f,
        "prompt-tuning" or "p-tuning" or "prefix-tuning" => 1e-2f,
        _ => 3e-3f,
    };

    private static JsonObject Quality(string method, string baseFolder, int steps)
    {
        using var model = HuggingFaceLlama.Load(baseFolder);
        Func<Batch, Tensor> loss = b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length);
        var train = BatchSource.FromFunction(p => DigitBatch(p, down: true, seed: 2));
        long baseParameters = model.CountParameters().Total;
        var applied = Apply(method, model, loss, train, rank: 8, dim: DigitsConfig.HiddenSize);
        float before = EvalLoss(model, loss);
        using var trainer = applied.CreateTrainer(model, loss, train, new TrainerOptions
        {
            MaxSteps = steps, LearningRate = LearningRate(method), Schedule = "cosine", WarmupSteps = 10, MaxGradNorm = 1f,
        });
        var clock = Stopwatch.StartNew();
        var result = trainer.Train();
        double seconds = clock.Elapsed.TotalSeconds;
        return new JsonObject
        {
            ["method"] = method,
            ["trainable"] = applied.Trainable,
            ["base_parameters"] = baseParameters,
            ["tokens_per_s"] = Math.Round((double)steps * Batch * Length / seconds, 0),
            ["eval_loss_before"] = Math.Round(before, 4),
            ["final_train_loss"] = Math.Round(result.Losses.TakeLast(10).Average(), 4),
            ["eval_loss"] = Math.Round(EvalLoss(model, loss), 4),
            ["peak_rss_mb"] = Math.Round(Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0, 1),
        };
    }

    /// <summary>Mean loss on held-out count-down batches (a seed training never draws from), in eval mode.</summary>
    private static float EvalLoss(Module model, Func<Batch, Tensor> loss)
    {
        model.Eval();
        double sum = 0;
        using (GradMode.Disable())
        {
            for (int i = 0; i < 8; i++)
            {
                using var scope = TensorScope.Begin();
                sum += loss(DigitBatch(i, down: true, seed: 99)).Item();
            }
        }
        model.Train();
        return (float)(sum / 8);
    }

    private static JsonObject Memory(string method)
    {
        const int batch = 4, length = 256;
        var config = LlamaConfig.Stories15M with { MaxPositionEmbeddings = length + Virtual };
        using var model = new LlamaForCausalLM(config, seed: 0);
        var random = new Random(0);
        var inputs = Enumerable.Range(0, batch * length).Select(_ => random.Next(config.VocabSize)).ToArray();
        var targets = Enumerable.Range(0, batch * length).Select(_ => random.Next(config.VocabSize)).ToArray();
        Func<Batch, Tensor> loss = b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length);
        var source = BatchSource.FromFunction(_ => new Batch(inputs, targets, batch, length));
        var applied = Apply(method, model, loss, source, rank: 8, dim: config.HiddenSize);
        using var trainer = applied.CreateTrainer(model, loss, source, new TrainerOptions { MaxSteps = 3, LearningRate = 1e-4f });
        var clock = Stopwatch.StartNew();
        trainer.Train();
        return new JsonObject
        {
            ["method"] = method,
            ["trainable"] = applied.Trainable,
            ["step_s"] = Math.Round(clock.Elapsed.TotalSeconds / 3, 3),
            ["peak_rss_mb"] = Math.Round(Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0, 1),
        };
    }

    // ---- parent --------------------------------------------------------------------------------------------------

    private static JsonObject Child(string method, string phase, string baseFolder, int steps, string threads)
    {
        var info = new ProcessStartInfo(Environment.ProcessPath!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        // Under `dotnet run` the process is the dotnet host; re-run the same assembly through it.
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") info.ArgumentList.Add(typeof(MethodsBenchmark).Assembly.Location);
        foreach (string a in new[] { "methods", "--method", method, "--phase", phase, "--base", baseFolder, "--steps", steps.ToString(CultureInfo.InvariantCulture), "--threads", threads })
            info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        string? line = stdout.Split('\n').LastOrDefault(l => l.StartsWith('{'));
        if (process.ExitCode != 0 || line == null)
            throw new InvalidOperationException($"methods: {method} ({phase}) failed with exit code {process.ExitCode}:\n{stdout}\n{stderr.Result}");
        return JsonNode.Parse(line)!.AsObject();
    }

    private static string Markdown(List<(JsonObject Quality, JsonObject Memory)> rows, int steps, float baseLoss)
    {
        var text = new StringBuilder();
        text.AppendLine("# Fine-tuning methods compared");
        text.AppendLine();
        text.AppendLine("Generated by `dotnet run -c Release --project benchmarks -- methods` (writes this file; about seven minutes on 2 cores).");
        text.AppendLine($"Machine: {Environment.ProcessorCount} cores, {CpuParallel.MaxThreads} threads, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; generated {DateTime.UtcNow:yyyy-MM-dd}.");
        text.AppendLine();
        text.AppendLine("**Task.** A 4-layer Llama (hidden 64, GQA 4/2 heads, vocab 10) is pretrained for 300 steps to continue digit");
        text.AppendLine(CultureInfo.InvariantCulture, $"sequences counting UP by 1, 2 or 3 (final loss {baseLoss:F4}). Each method then trains it for {steps} steps (AdamW,");
        text.AppendLine("cosine schedule, batch 16 × 24) to count DOWN, which the base has never seen. Loss is cross-entropy in nats; the");
        text.AppendLine("floor is about 0.046 (the second token of a sequence cannot tell the step: ln 3 / 24). Eval loss: held-out sequences.");
        text.AppendLine("LoRA-family methods use r = 8, alpha = 16 on all seven projections; learning rates per family are in `benchmarks/MethodsBenchmark.cs`.");
        text.AppendLine();
        text.AppendLine("**Memory.** The same method on a stories15M-shaped Llama (15M parameters, random weights), batch 4 × 256, three steps,");
        text.AppendLine("each method in its own process: peak resident memory (runtime included) and seconds per training step.");
        text.AppendLine();
        text.AppendLine("| Method | Trainable (task) | % of base | Tokens/s | Eval loss before → after | Final train loss | Trainable (15M) | Peak RSS 15M (MB) | Step 15M (s) |");
        text.AppendLine("|---|---:|---:|---:|---|---:|---:|---:|---:|");
        foreach (var (q, m) in rows)
        {
            long trainable = q["trainable"]!.GetValue<long>();
            double basePercent = 100.0 * trainable / q["base_parameters"]!.GetValue<long>();
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {q["method"]} | {trainable:N0} | {basePercent:F2} | {q["tokens_per_s"]!.GetValue<double>():N0} | {q["eval_loss_before"]!.GetValue<double>():F3} → {q["eval_loss"]!.GetValue<double>():F4} | {q["final_train_loss"]!.GetValue<double>():F4} | {m["trainable"]!.GetValue<long>():N0} | {m["peak_rss_mb"]!.GetValue<double>():N0} | {m["step_s"]!.GetValue<double>():F2} |"));
        }
        text.AppendLine();
        text.AppendLine("Notes: `full` trains every weight. `sparse` trains 2% of the linear weights' entries, chosen by gradient magnitude on");
        text.AppendLine("two calibration batches. `delta-lora` starts moving the base at step 10 (λ = 2). `lora+layer-drop` skips each layer");
        text.AppendLine("with p = 0.1 while training; `lora+layerwise-lr` scales the learning rate by 0.7 per layer towards the input. VeRA uses");
        text.AppendLine("r = 256 shared projections; IA3 scales k, v and the FFN input; prompt, prefix (MLP-reparameterised) and P-tuning use 8");
        text.AppendLine("virtual tokens. Per-method pages: [docs/methods/](methods/).");
        return text.ToString();
    }
}
