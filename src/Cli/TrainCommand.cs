using System.CommandLine;
using System.Globalization;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Text;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>
/// <c>peftgen train</c>: fine-tune an adapter of any PEFT method (<see cref="TrainMethods"/>: --method and each method's
/// settings) on a JSONL dataset through <see cref="FineTuneSession"/>, the one training path.
/// stderr shows the plan and a progress bar; stdout lists the files written (adapter, metrics, loss curve).
/// </summary>
/// <remarks>
/// Every setting is checked before anything loads, and errors name the option as typed. The outputs (adapter/,
/// metrics.jsonl, loss.svg) replace an earlier run's only when the run succeeds: a failed or cancelled run leaves them
/// as they were (checkpoints it wrote stay, for --resume). --resume needs a checkpoint before --steps: with none, or
/// with the newest already at or past --steps (nothing to train), train exits with code 1 and says what to change.
/// A non-finite loss stops the run with exit code 1 (--on-nan stop) or skips the step (--on-nan skip).
/// </remarks>
internal static class TrainCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var tokenizer = CommonOptions.Tokenizer();
        var data = CommonOptions.Data();
        var output = new Option<string>("--output") { Description = "output folder: adapter/, metrics.jsonl, loss.svg, checkpoint-N/", DefaultValueFactory = _ => "peftgen-output" };
        var steps = new Option<int>("--steps") { Description = "optimizer steps", DefaultValueFactory = _ => 100 };
        var batchSize = new Option<int>("--batch-size") { Description = "rows per micro-batch", DefaultValueFactory = _ => 4 };
        var accumulation = new Option<int>("--grad-accum") { Description = "micro-batches per optimizer step", DefaultValueFactory = _ => 1 };
        var maxLength = new Option<int>("--max-length") { Description = "most tokens per row (at most the model's context; default 512, or the context when shorter)", DefaultValueFactory = _ => 512 };
        var learningRate = new Option<float>("--lr") { Description = "peak learning rate", DefaultValueFactory = _ => 2e-4f };
        var schedule = new Option<string>("--schedule") { Description = "learning-rate schedule", DefaultValueFactory = _ => "constant" };
        schedule.AcceptOnlyFromAmong("constant", "linear", "cosine");
        var warmup = new Option<int>("--warmup") { Description = "warmup steps", DefaultValueFactory = _ => 0 };
        var maxGradNorm = new Option<float>("--max-grad-norm") { Description = "gradient-norm clipping; 0 disables", DefaultValueFactory = _ => 0.3f };
        var optimizer = new Option<string>("--optimizer") { Description = "optimizer", DefaultValueFactory = _ => "adamw" };
        optimizer.AcceptOnlyFromAmong("adamw", "adamw8bit", "paged-adamw", "paged-adamw8bit");
        var chatFormat = new Option<string?>("--chat-format") { Description = $"prompt format of instruction and chat records ({string.Join(", ", ChatFormat.Names)}); default: from the tokenizer's chat template, else alpaca/chatml" };
        var fullLoss = new Option<bool>("--train-on-prompts") { Description = "score prompt tokens too (default: only responses)" };
        var pack = new Option<bool>("--pack") { Description = "pack examples into full rows" };
        var evalFraction = new Option<double>("--eval-fraction") { Description = "share of examples held out for evaluation", DefaultValueFactory = _ => 0 };
        var evalEvery = new Option<int>("--eval-every") { Description = "evaluate every N steps (0: at the end)", DefaultValueFactory = _ => 0 };
        var saveEvery = new Option<int>("--save-every") { Description = "write a resumable checkpoint every N steps (0: never)", DefaultValueFactory = _ => 0 };
        var resume = new Option<bool>("--resume") { Description = "continue from the newest checkpoint in the output folder (error when there is none, or when it is already at --steps)" };
        var onNan = new Option<string>("--on-nan") { Description = "a NaN or infinite loss: stop (exit code 1, naming the step) or skip the step", DefaultValueFactory = _ => "stop" };
        onNan.AcceptOnlyFromAmong("stop", "skip");
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "recompute activations in backward (less memory, slower)" };
        var seed = new Option<int>("--seed") { Description = "seed of adapter init, dropout and data order", DefaultValueFactory = _ => 0 };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var methods = new TrainMethods();
        var command = new Command("train", "Fine-tune an adapter of any PEFT method (--method; QLoRA by default) on a JSONL dataset; writes the adapter (the method's format, PEFT's where it has one), metrics.jsonl and loss.svg.")
        {
            model, tokenizer, data, output, methods.Method, steps, batchSize, accumulation, maxLength, learningRate, schedule, warmup, maxGradNorm, optimizer,
            chatFormat, fullLoss, pack, evalFraction, evalEvery, saveEvery, resume, onNan, checkpointing, seed, device, threads,
        };
        foreach (var option in methods.Settings) command.Options.Add(option);
        command.SetAction((parse, cancellationToken) => Task.FromResult(CliErrors.Run(() =>
        {
            // Every setting is checked before anything is loaded, in the option's own name.
            int stepsValue = parse.GetValue(steps);
            CommonOptions.Require(stepsValue >= 1, "--steps", stepsValue, "must be ≥ 1");
            CommonOptions.Require(parse.GetValue(batchSize) >= 1, "--batch-size", parse.GetValue(batchSize), "must be ≥ 1");
            CommonOptions.Require(parse.GetValue(accumulation) >= 1, "--grad-accum", parse.GetValue(accumulation), "must be ≥ 1");
            CommonOptions.Require(parse.GetValue(maxLength) >= 1, "--max-length", parse.GetValue(maxLength), "must be ≥ 1");
            float lr = parse.GetValue(learningRate);
            CommonOptions.Require(lr > 0 && float.IsFinite(lr), "--lr", lr, "must be a finite value > 0 (e.g. 2e-4)");
            CommonOptions.Require(parse.GetValue(warmup) >= 0 && parse.GetValue(warmup) <= stepsValue, "--warmup", parse.GetValue(warmup), $"must be in [0, --steps = {stepsValue}]");
            float gradNorm = parse.GetValue(maxGradNorm);
            CommonOptions.Require(gradNorm >= 0 && float.IsFinite(gradNorm), "--max-grad-norm", gradNorm, "must be a finite value ≥ 0 (0 disables clipping)");
            methods.Check(parse);
            double evalFractionValue = parse.GetValue(evalFraction);
            CommonOptions.Require(evalFractionValue >= 0 && evalFractionValue < 1, "--eval-fraction", evalFractionValue, "must be in [0, 1)");
            CommonOptions.Require(parse.GetValue(evalEvery) >= 0, "--eval-every", parse.GetValue(evalEvery), "must be ≥ 0 (0: at the end)");
            CommonOptions.Require(parse.GetValue(saveEvery) >= 0, "--save-every", parse.GetValue(saveEvery), "must be ≥ 0 (0: never)");
            string outputDir = parse.GetValue(output)!;
            if (string.IsNullOrWhiteSpace(outputDir)) throw new CliError("--output is empty: name an output folder.");
            CheckResume(outputDir, parse.GetValue(resume), stepsValue, parse.GetValue(saveEvery));

            var target = CommonOptions.Prepare(parse, device, threads);
            int seedValue = parse.GetValue(seed);
            var options = new FineTuneOptions
            {
                ModelPath = parse.GetValue(model),
                TokenizerPath = parse.GetValue(tokenizer),
                DataPath = parse.GetValue(data)!,
                OutputDir = outputDir,
                Dataset = new JsonlDatasetOptions
                {
                    MaxSequenceLength = parse.GetValue(maxLength),
                    ChatFormat = parse.GetValue(chatFormat) is { } format ? ChatFormat.Get(format) : null,
                    ResponseOnlyLoss = !parse.GetValue(fullLoss),
                },
                BatchSize = parse.GetValue(batchSize),
                Pack = parse.GetValue(pack),
                EvalFraction = parse.GetValue(evalFraction),
                Seed = seedValue,
                Trainer = new TrainerOptions
                {
                    MaxSteps = parse.GetValue(steps),
                    GradientAccumulationSteps = parse.GetValue(accumulation),
                    LearningRate = parse.GetValue(learningRate),
                    Schedule = parse.GetValue(schedule)!,
                    WarmupSteps = parse.GetValue(warmup),
                    MaxGradNorm = parse.GetValue(maxGradNorm),
                    Optimizer = parse.GetValue(optimizer) switch
                    {
                        "adamw8bit" => OptimizerKind.AdamW8bit,
                        "paged-adamw" => OptimizerKind.PagedAdamW,
                        "paged-adamw8bit" => OptimizerKind.PagedAdamW8bit,
                        _ => OptimizerKind.AdamW,
                    },
                    LoRAPlusRatio = parse.GetValue(methods.LoRAPlus),
                    LayerwiseLearningRateDecay = parse.GetValue(methods.LayerwiseDecay),
                    EvalEvery = parse.GetValue(evalEvery),
                    CheckpointEvery = parse.GetValue(saveEvery),
                    OnNonFinite = parse.GetValue(onNan) == "skip" ? NonFinitePolicy.SkipStep : NonFinitePolicy.Stop,
                },
                GradientCheckpointing = parse.GetValue(checkpointing),
                Resume = parse.GetValue(resume),
                Device = target,
            };

            // Train writes only into its output folder; it must not be (or lie inside) an input, nor be a file.
            if (File.Exists(options.OutputDir))
                throw new ArgumentException($"--output {options.OutputDir} is a file: train writes a folder (adapter/, metrics.jsonl, loss.svg). Name a folder for --output.");
            PathIdentity.EnsureOutputSeparate("--output", options.OutputDir,
                [("the model (--model)", options.ModelPath), ("the dataset (--data)", options.DataPath), ("the tokenizer (--tokenizer)", options.TokenizerPath)]);
            var (modelConfig, weightType) = ModelLoader.Inspect(options.ModelPath!);
            // Prompt learning's virtual tokens take positions of the context too.
            int virtualTokens = parse.GetValue(methods.Method) is "prompt" or "prefix" or "p-tuning" ? parse.GetValue(methods.NumVirtualTokens) : 0;
            if (virtualTokens >= modelConfig.MaxPositionEmbeddings)
                throw new CliError($"--num-virtual-tokens {virtualTokens}: the model's context is {modelConfig.MaxPositionEmbeddings} tokens, which must hold the virtual tokens and at least one real token.");
            options = options with { Dataset = options.Dataset with { MaxSequenceLength = CommonOptions.MaxLength(parse, maxLength, modelConfig.MaxPositionEmbeddings - virtualTokens, virtualTokens) } };
            var plan = methods.Plan(parse, options);
            if (plan.LoRA != null) options = options with { LoRA = plan.LoRA, Quantization = plan.Quantization };
            options.Validate();

            // The prediction (LoRA family) needs only the checkpoint's headers, so it comes before anything is loaded.
            MemoryEstimate? estimate = null;
            if (plan.LoRA != null)
            {
                estimate = MemoryModel.ForTraining(modelConfig, plan.LoRA, plan.Quantization, weightType, options.BatchSize,
                    options.Dataset.MaxSequenceLength, options.GradientCheckpointing, options.Trainer.Optimizer);
                Console.Error.WriteLine($"memory: {estimate} ({weightType.ToString().ToLowerInvariant()} checkpoint, batch {options.BatchSize} × {options.Dataset.MaxSequenceLength}{(options.GradientCheckpointing ? ", gradient checkpointing" : "")})");
                if (parse.GetValue(methods.DryRun))
                {
                    Console.Out.WriteLine(MemoryJson(estimate));
                    return 0;
                }
            }

            // Every method takes the one training path: the session loads the model as the method needs, applies it with its
            // runtime Create (what the DSL's generated ApplyAdapters calls) and trains it with the one Trainer.
            using var session = FineTuneSession.Open(options, plan.Adapt, plan.Load);
            Console.Error.WriteLine(Invariant($"memory after load: peak resident set {ProcessMemory.PeakResidentBytes / 1e9:F2} GB, resident {ProcessMemory.ResidentBytes / 1e9:F2} GB")
                + (estimate != null ? Invariant($" (predicted {estimate.AfterLoad / 1e9:F2} GB)") : ""));
            var config = session.Model.Config;
            var dataset = session.Dataset;
            Console.Error.WriteLine($"model {options.ModelPath}: {config.NumHiddenLayers} layers, hidden {config.HiddenSize}, vocab {config.VocabSize}, context {config.MaxPositionEmbeddings}");
            Console.Error.WriteLine($"adapter: {TrainMethods.Describe(session.Peft, plan)}");
            Console.Error.WriteLine($"data {options.DataPath}: {dataset.Examples.Count} {dataset.Kind.ToString().ToLowerInvariant()} examples{(dataset.ChatFormat is { } f ? $" ({f.Name} format)" : "")}, {session.TrainBatches.RowCount} training rows, {session.TrainBatches.BatchesPerEpoch} batches per epoch"
                + (session.EvalBatches is { } e ? $", {e.RowCount} eval rows" : "")
                + (dataset.TruncatedExamples > 0 ? $", {dataset.TruncatedExamples} truncated to {options.Dataset.MaxSequenceLength} tokens" : "")
                + (dataset.DroppedExamples > 0 ? $", {dataset.DroppedExamples} dropped (nothing to score)" : ""));
            if (session.ResumeCheckpoint is { } checkpoint) Console.Error.WriteLine($"resuming from {checkpoint}");

            FineTuneResult result;
            try
            {
                result = session.Train(new TrainingProgressBar(Console.Error, interactive: !Console.IsErrorRedirected), cancellationToken);
            }
            catch (InvalidOperationException nan) when (nan.Data[Trainer.NonFiniteStepKey] is int step)
            {
                throw new CliError(Invariant(
                    $"the {nan.Data[Trainer.NonFiniteKindKey]} became NaN or infinite at step {step} (--lr {options.Trainer.LearningRate}, learning rate {nan.Data[Trainer.NonFiniteLearningRateKey]} at that step): lower --lr, set --max-grad-norm (now {options.Trainer.MaxGradNorm}; 0 disables clipping), check the data, or give --on-nan skip to skip such steps. The output folder's earlier results are unchanged."), nan);
            }
            var losses = result.Training.Losses.Where(float.IsFinite).ToList();
            int trainedSteps = options.Trainer.MaxSteps - (result.ResumedFromStep ?? 0);
            Console.Error.WriteLine(
                Invariant($"trained {trainedSteps} steps{(result.ResumedFromStep is int from ? Invariant($" (steps {from + 1}–{options.Trainer.MaxSteps}, resumed at step {from})") : "")} in {result.Elapsed.TotalSeconds:F1} s; loss {(losses.Count > 0 ? Invariant($"{losses[0]:F4} → {losses[^1]:F4}") : "n/a")}")
                + (result.Training.EvalLosses.Count > 0 ? Invariant($", eval loss {result.Training.EvalLosses[^1].Loss:F4}") : "")
                + (result.Training.SkippedSteps > 0 ? $", {result.Training.SkippedSteps} steps skipped" : ""));
            Console.Error.WriteLine(Invariant($"memory: peak resident set {ProcessMemory.PeakResidentBytes / 1e9:F2} GB") + (estimate != null ? Invariant($" (predicted {estimate.Total / 1e9:F2} GB)") : ""));
            AfterTrainingForTests?.Invoke(session.Peft);
            Console.Out.WriteLine($"adapter: {Path.GetFullPath(result.AdapterDir)}");
            Console.Out.WriteLine($"metrics: {Path.GetFullPath(result.MetricsPath)}");
            Console.Out.WriteLine($"loss curve: {Path.GetFullPath(result.LossCurvePath)}");
            return 0;
        })));
        return command;
    }

    /// <summary>
    /// The checks of --resume and the checkpoints in the output folder, before anything loads: --resume needs a
    /// checkpoint before --steps; a fresh run with --save-every must not mix its checkpoints with an earlier run's.
    /// </summary>
    private static void CheckResume(string outputDir, bool resume, int steps, int saveEvery)
    {
        string? latest = Trainer.LatestCheckpoint(outputDir);
        if (resume)
        {
            if (latest == null)
                throw new CliError($"--resume: '{outputDir}' holds no checkpoint (checkpoint-N folder) to continue from. Drop --resume to start a fresh run (add --save-every N to write checkpoints).");
            int step = Trainer.CheckpointStep(latest) ?? 0;
            if (step >= steps)
                throw new CliError($"nothing to train: the newest checkpoint '{latest}' is at step {step}, at or past --steps {steps}. Raise --steps above {step} to train further; that run's adapter is in '{Path.Combine(outputDir, FineTuneSession.AdapterFolderName)}'.");
        }
        else if (latest != null && saveEvery > 0)
            throw new CliError($"--output '{outputDir}' already holds checkpoints of an earlier run ({Path.GetFileName(latest)}): add --resume to continue it, or give another --output (or delete the checkpoint-N folders) to start over.");
    }

    /// <summary>Tests read the trained model here, before the session disposes it (the tests run one at a time).</summary>
    internal static Action<IAdaptedModel>? AfterTrainingForTests { get; set; }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    /// <summary>The estimate as one JSON object (bytes), for scripts and the memory benchmark.</summary>
    private static string MemoryJson(MemoryEstimate e) => Invariant(
        $"{{\"predicted_peak_bytes\":{e.Total},\"after_load_bytes\":{e.AfterLoad},\"four_bit_weights_bytes\":{e.FourBitWeights},\"frozen_weights_bytes\":{e.FrozenWeights},\"adapter_bytes\":{e.Adapter},\"activations_bytes\":{e.Activations},\"workspace_bytes\":{e.Workspace},\"runtime_bytes\":{e.Runtime}}}");
}
