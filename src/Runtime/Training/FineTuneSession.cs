using System.Diagnostics;
using System.Text.Json;
using PeftGen.Data;
using PeftGen.Generation;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Text;

namespace PeftGen.Training;

/// <summary>A prompt taken from the dataset, with the reply the dataset teaches.</summary>
/// <param name="PromptIds">The prompt's token ids (with BOS when the dataset adds it).</param>
/// <param name="Prompt">The prompt as text.</param>
/// <param name="Expected">The scored part of the example as text.</param>
public sealed record DatasetSample(int[] PromptIds, string Prompt, string Expected);

/// <summary>What <see cref="FineTuneSession{TAdapted}.Train"/> produced.</summary>
/// <param name="Training">Losses per step and evaluations.</param>
/// <param name="AdapterDir">The adapter folder, in the method's format (Hugging Face PEFT's where it has one).</param>
/// <param name="MetricsPath">The metrics log, one JSON line per step.</param>
/// <param name="LossCurvePath">The loss-curve SVG.</param>
/// <param name="ResumedFromStep">The checkpoint step training continued from, or null for a fresh run.</param>
/// <param name="Elapsed">Wall time of training and saving.</param>
public sealed record FineTuneResult(TrainResult Training, string AdapterDir, string MetricsPath, string LossCurvePath, int? ResumedFromStep, TimeSpan Elapsed);

/// <summary>Entry points of the fine-tuning facade.</summary>
public static class FineTuneSession
{
    /// <summary>Name of the adapter folder inside the output folder.</summary>
    public const string AdapterFolderName = "adapter";

    /// <summary>
    /// Loads <see cref="FineTuneOptions.ModelPath"/> and its tokenizer, adds the LoRA (QLoRA) adapter the options
    /// describe, and reads the dataset. The session owns the model.
    /// </summary>
    /// <param name="options">The job; <see cref="FineTuneOptions.ModelPath"/> is required.</param>
    /// <returns>The session, ready to <see cref="FineTuneSession{TAdapted}.Train"/>.</returns>
    /// <exception cref="ArgumentException">A setting is invalid (the message names it).</exception>
    /// <exception cref="FileNotFoundException">The model, tokenizer or dataset is missing (the message names it).</exception>
    /// <exception cref="InvalidDataException">A file is malformed (the message names it and where).</exception>
    public static FineTuneSession<PeftModel<LlamaForCausalLM>> Open(FineTuneOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        // The adapter's targets are quantized while they are read (QLoRA) and frozen weights stay 16-bit, so the float32
        // model never exists: peak memory is the trained model's, not the checkpoint's in float32.
        return Open(options, model => PeftModel.Create(model, options.LoRA, options.Quantization), PeftModel.LoadOptions(options.LoRA, options.Quantization));
    }

    /// <summary>
    /// Loads <see cref="FineTuneOptions.ModelPath"/> and its tokenizer, applies any PEFT method to the model with
    /// <paramref name="adapt"/> (for example <c>m =&gt; PeftModel.Create(m, ia3Config)</c> or
    /// <c>m =&gt; BottleneckModel.Create(m, bottleneckConfig)</c>), and reads the dataset. The session owns the
    /// model; <see cref="FineTuneOptions.LoRA"/> and <see cref="FineTuneOptions.Quantization"/> are not used.
    /// </summary>
    /// <typeparam name="TAdapted">The adapted model's type.</typeparam>
    /// <param name="options">The job; <see cref="FineTuneOptions.ModelPath"/> is required.</param>
    /// <param name="adapt">Applies the method to the loaded model and returns the adapted model.</param>
    /// <param name="load">How the weights are stored; null keeps every weight in the checkpoint's type (16-bit weights stay
    /// 16-bit and frozen). Sparse fine-tuning and Delta-LoRA change base weights, which must then be float32: pass
    /// <c>new ModelLoadOptions()</c>.</param>
    /// <returns>The session, ready to <see cref="FineTuneSession{TAdapted}.Train"/>.</returns>
    /// <exception cref="ArgumentException">A setting is invalid (the message names it).</exception>
    /// <exception cref="FileNotFoundException">The model, tokenizer or dataset is missing (the message names it).</exception>
    /// <exception cref="InvalidDataException">A file is malformed (the message names it and where).</exception>
    public static FineTuneSession<TAdapted> Open<TAdapted>(FineTuneOptions options, Func<LlamaForCausalLM, TAdapted> adapt, ModelLoadOptions? load = null)
        where TAdapted : IAdaptedModel
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(adapt);
        options.Validate();
        if (string.IsNullOrWhiteSpace(options.ModelPath))
            throw new ArgumentException("FineTuneOptions.ModelPath is empty: name a Hugging Face model folder or a llama2.c checkpoint.", nameof(options));
        if (!File.Exists(options.DataPath)) throw new FileNotFoundException($"Dataset file '{options.DataPath}' does not exist.", options.DataPath);
        var pretrained = PretrainedModel.Load(options.ModelPath, options.TokenizerPath, options.Device,
            load ?? new ModelLoadOptions { FrozenWeights = FrozenWeightStorage.AsStored });
        try
        {
            var adapted = adapt(pretrained.Model);
            Place(adapted, options.Device);
            return new FineTuneSession<TAdapted>(adapted, pretrained.Tokenizer, options, ownsModel: true);
        }
        catch
        {
            pretrained.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A session over a model that already carries its adapter, of any method (for example one declared with the DSL and
    /// <c>ApplyAdapters()</c>: the settings its attributes declare, such as the LoRA+ ratio, apply to the trainer);
    /// <see cref="FineTuneOptions.LoRA"/>, <see cref="FineTuneOptions.Quantization"/> and
    /// <see cref="FineTuneOptions.ModelPath"/> are ignored. The caller keeps ownership of the model.
    /// </summary>
    /// <typeparam name="TAdapted">The adapted model's type.</typeparam>
    /// <param name="adapted">The adapted model (<see cref="PeftModel{TModel}"/>, <see cref="Methods.VeRA.VeraModel{TModel}"/>, <see cref="Methods.IA3.IA3Model{TModel}"/>,
    /// <see cref="Methods.Bottleneck.BottleneckModel{TModel}"/>, <see cref="Methods.PromptLearning.PromptLearningModel"/>, <see cref="Methods.Sparse.SparseFineTuning"/>); its active adapter trains.</param>
    /// <param name="tokenizer">The tokenizer of the dataset.</param>
    /// <param name="options">Data, batches, trainer and output settings.</param>
    /// <returns>The session.</returns>
    /// <exception cref="ArgumentException">The model is not a causal LM, or a setting is invalid.</exception>
    public static FineTuneSession<TAdapted> Create<TAdapted>(TAdapted adapted, ITokenizer tokenizer, FineTuneOptions options)
        where TAdapted : IAdaptedModel
    {
        ArgumentNullException.ThrowIfNull(adapted);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Place(adapted, ComputeDevice.Require(options.Device));
        return new FineTuneSession<TAdapted>(adapted, tokenizer, options, ownsModel: false);
    }

    /// <summary>Puts the trained module and the causal LM around it (prompt learning's base) on the device.</summary>
    private static void Place(IAdaptedModel adapted, Device device)
    {
        ComputeDevice.Place(adapted.TrainedModule, device);
        if (adapted.CausalLM is { } lm && !ReferenceEquals(lm, adapted.TrainedModule)) ComputeDevice.Place(lm, device);
    }
}

/// <summary>
/// One fine-tuning job, the path both <c>peftgen train</c> and the QuickStart take: a causal LM adapted with any PEFT
/// method (<see cref="IAdaptedModel"/>), a tokenized JSONL dataset split into batches, the <see cref="Trainer"/>, and the
/// outputs: the adapter in the method's format, <c>metrics.jsonl</c> and <c>loss.svg</c>. Create it with
/// <see cref="FineTuneSession.Open(FineTuneOptions)"/> or <see cref="FineTuneSession.Create"/>.
/// </summary>
/// <typeparam name="TAdapted">The adapted model's type.</typeparam>
public sealed class FineTuneSession<TAdapted> : IDisposable where TAdapted : IAdaptedModel
{
    private readonly bool _ownsModel;

    internal FineTuneSession(TAdapted peft, ITokenizer tokenizer, FineTuneOptions options, bool ownsModel)
    {
        Peft = peft;
        Tokenizer = tokenizer;
        Options = options;
        _ownsModel = ownsModel;
        Model = peft.CausalLM
            ?? throw new ArgumentException($"{peft.GetType().Name} adapts a {peft.TrainedModule.GetType().Name}, which is not a causal language model: a fine-tuning session trains causal LMs (train other modules with a Trainer and a loss function).", nameof(peft));
        var config = Model.Config;
        if (tokenizer.VocabSize != config.VocabSize)
            throw new ArgumentException($"The tokenizer has {tokenizer.VocabSize} tokens but the model's vocabulary has {config.VocabSize}: they do not belong together.", nameof(tokenizer));
        int maxLength = options.Dataset.MaxSequenceLength;
        int virtualTokens = Model.Model.VirtualTokens?.Count ?? 0;
        if (maxLength + virtualTokens > config.MaxPositionEmbeddings)
            throw new ArgumentException(virtualTokens == 0
                ? $"The maximum sequence length {maxLength} exceeds the model's context of {config.MaxPositionEmbeddings} tokens (max_position_embeddings): lower it."
                : $"The maximum sequence length {maxLength} plus the {virtualTokens} virtual tokens exceeds the model's context of {config.MaxPositionEmbeddings} tokens (max_position_embeddings): lower it.", nameof(options));
        Dataset = JsonlDataset.Load(options.DataPath, tokenizer, options.Dataset);
        var (train, eval) = options.EvalFraction > 0 ? Dataset.Split(options.EvalFraction, options.Seed) : (Dataset.Examples, []);
        if (train.Count == 0)
            throw new ArgumentException($"EvalFraction {options.EvalFraction} leaves no training example of the {Dataset.Examples.Count} in '{options.DataPath}'.", nameof(options));
        TrainBatches = Dataset.CreateBatchSource(options.BatchSize, maxLength, options.Seed, options.Pack, examples: train);
        EvalBatches = eval.Count > 0 ? Dataset.CreateBatchSource(options.BatchSize, maxLength, options.Seed, options.Pack, shuffle: false, examples: eval) : null;
    }

    /// <summary>The adapted model (the model with its PEFT method).</summary>
    public TAdapted Peft { get; }

    /// <summary>The causal LM that computes the loss and generates, adapters active (<see cref="IAdaptedModel.CausalLM"/>).</summary>
    public LlamaForCausalLM Model { get; }

    /// <summary>The tokenizer.</summary>
    public ITokenizer Tokenizer { get; }

    /// <summary>The settings.</summary>
    public FineTuneOptions Options { get; }

    /// <summary>The tokenized dataset.</summary>
    public JsonlDataset Dataset { get; }

    /// <summary>Training batches.</summary>
    public DatasetBatchSource TrainBatches { get; }

    /// <summary>Evaluation batches, when <see cref="FineTuneOptions.EvalFraction"/> holds examples out.</summary>
    public DatasetBatchSource? EvalBatches { get; }

    /// <summary>Where the adapter is written: <c>&lt;output&gt;/adapter</c>.</summary>
    public string AdapterDir => Path.Combine(Options.OutputDir, FineTuneSession.AdapterFolderName);

    /// <summary>Where the metrics go: <c>&lt;output&gt;/metrics.jsonl</c>.</summary>
    public string MetricsPath => Path.Combine(Options.OutputDir, MetricsJsonl.FileName);

    /// <summary>Where the loss curve goes: <c>&lt;output&gt;/loss.svg</c>.</summary>
    public string LossCurvePath => Path.Combine(Options.OutputDir, LossCurveSvg.FileName);

    /// <summary>The checkpoint <see cref="Train"/> will continue from (<see cref="FineTuneOptions.Resume"/>), or null (none there, or no resume).</summary>
    public string? ResumeCheckpoint => Options.Resume ? Trainer.LatestCheckpoint(Options.OutputDir) : null;

    /// <summary>
    /// Up to <paramref name="count"/> distinct prompts from the examples (held-out ones first): the tokens before the
    /// first scored one (the instruction, for Alpaca and chat data), or the first few tokens of plain text.
    /// </summary>
    /// <param name="count">How many samples.</param>
    /// <returns>Up to <paramref name="count"/> samples.</returns>
    public IReadOnlyList<DatasetSample> SamplePrompts(int count)
    {
        var (train, eval) = Options.EvalFraction > 0 ? Dataset.Split(Options.EvalFraction, Options.Seed) : (Dataset.Examples, []);
        var samples = new List<DatasetSample>();
        foreach (var example in eval.Concat(train))
        {
            if (samples.Count >= count) break;
            int firstScored = Array.FindIndex(example.Labels, 1, l => l != JsonlDataset.IgnoreLabel);
            int promptLength = firstScored > 1 ? firstScored : Math.Clamp(example.Tokens.Length / 2, 1, 8);
            var prompt = example.Tokens[..promptLength];
            int end = example.Tokens.Length - (example.Tokens[^1] == Tokenizer.EosId ? 1 : 0);
            if (samples.Any(s => s.PromptIds.AsSpan().SequenceEqual(prompt))) continue; // texts that open alike give one sample
            samples.Add(new DatasetSample(prompt, Tokenizer.Decode(prompt), Continuation(prompt, example.Tokens[..Math.Max(promptLength, end)])));
        }
        return samples;
    }

    /// <summary>Continues <paramref name="promptIds"/> with the model as it is now (adapter active) and returns only the new text.</summary>
    /// <param name="promptIds">The prompt's token ids.</param>
    /// <param name="options">Sampling settings.</param>
    /// <param name="cancellationToken">Stops generation.</param>
    /// <returns>The continuation.</returns>
    public string Generate(int[] promptIds, SamplingOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(promptIds);
        var ids = new TextGenerator(Model, Tokenizer).GenerateIds(promptIds, options, cancellationToken);
        return Continuation(promptIds, ids);
    }

    /// <summary>
    /// Trains the adapter for <see cref="TrainerOptions.MaxSteps"/> steps (continuing from the newest checkpoint when
    /// <see cref="FineTuneOptions.Resume"/> is set), then writes the adapter in its method's format
    /// (<see cref="IAdaptedModel.SaveAdapter"/>), the metrics log and the loss curve.
    /// </summary>
    /// <remarks>
    /// The outputs are whole or nothing: the run writes <c>adapter/</c>, <c>metrics.jsonl</c> (appended after every
    /// step) and <c>loss.svg</c> into a hidden staging folder inside the output folder (<c>.run-*</c>) and moves them
    /// into place only once all are complete, so a run that fails or is cancelled leaves the previous run's outputs
    /// exactly as they were. Checkpoints (<c>checkpoint-N/</c>) go straight into the output folder, each written
    /// atomically with a copy of the metrics log up to its step, so an interrupted run can be resumed. One run writes an
    /// output folder at a time: a staging folder left by a killed run is removed when the next run starts.
    /// </remarks>
    /// <param name="progress">Receives every step's report (for example a <see cref="TrainingProgressBar"/>).</param>
    /// <param name="cancellationToken">Stops training between steps (nothing is saved then, except checkpoints already written).</param>
    /// <returns>Losses and output paths.</returns>
    /// <exception cref="ArgumentException">
    /// <see cref="FineTuneOptions.Resume"/> is set but the output folder holds no checkpoint, or its newest checkpoint is
    /// already at or past <see cref="TrainerOptions.MaxSteps"/> (nothing to train); or a fresh run would write
    /// checkpoints beside those of an earlier run.
    /// </exception>
    /// <exception cref="InvalidOperationException">A non-finite loss under <see cref="NonFinitePolicy.Stop"/> (see <see cref="Trainer.NonFiniteStepKey"/>).</exception>
    public FineTuneResult Train(IProgress<TrainerProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        string? checkpoint = CheckResume();
        Directory.CreateDirectory(Options.OutputDir);
        // A run killed outright (SIGKILL, power loss) leaves its staging folder behind; one run writes an output folder at
        // a time, so any staging folder found now is such a leftover.
        foreach (var stale in Directory.EnumerateDirectories(Options.OutputDir, StagingPrefix + "*")) TryDeleteFolder(stale);
        var staging = Path.Combine(Options.OutputDir, $"{StagingPrefix}{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            var stagedMetrics = Path.Combine(staging, MetricsJsonl.FileName);
            var trainerOptions = Options.Trainer with { OutputDir = Options.OutputDir, MetricsPath = stagedMetrics };
            using var trainer = new Trainer(Peft, TrainBatches, trainerOptions, EvalBatches);
            int? resumedFrom = null;
            if (checkpoint != null)
            {
                trainer.LoadCheckpoint(checkpoint);
                resumedFrom = trainer.Step;
                // The log continues from the checkpoint's copy (older checkpoints have none: then the output folder's).
                var log = Trainer.CheckpointMetrics(checkpoint) ?? (File.Exists(MetricsPath) ? MetricsPath : null);
                if (log != null) KeepMetricsUpTo(log, stagedMetrics, trainer.Step);
            }

            bool checkpointing = Model.Model.GradientCheckpointing;
            if (Options.GradientCheckpointing) Model.Model.EnableGradientCheckpointing([.. Peft.RandomGenerators]);
            TrainResult result;
            try
            {
                result = trainer.Train(progress, cancellationToken);
            }
            finally
            {
                if (Options.GradientCheckpointing && !checkpointing) Model.Model.DisableGradientCheckpointing();
                Peft.TrainedModule.Eval();
                Model.Eval();
            }
            cancellationToken.ThrowIfCancellationRequested();
            Peft.SaveAdapter(Path.Combine(staging, FineTuneSession.AdapterFolderName), Options.BaseModelName ?? Options.ModelPath);
            LossCurveSvg.Write(Path.Combine(staging, LossCurveSvg.FileName), result.Losses, result.EvalLosses, $"Training loss: {Path.GetFileName(Options.DataPath)}");
            if (!File.Exists(stagedMetrics)) File.WriteAllBytes(stagedMetrics, []);
            cancellationToken.ThrowIfCancellationRequested();
            SwapIn(staging, [FineTuneSession.AdapterFolderName, MetricsJsonl.FileName, LossCurveSvg.FileName]);
            return new FineTuneResult(result, AdapterDir, MetricsPath, LossCurvePath, resumedFrom, clock.Elapsed);
        }
        finally
        {
            TryDeleteFolder(staging);
        }
    }

    /// <summary>Name prefix of the hidden folder a run stages its outputs in.</summary>
    private const string StagingPrefix = ".run-";

    /// <summary>
    /// The checkpoint to resume from (null for a fresh run), after checking that the run makes sense: a resume needs a
    /// checkpoint before <see cref="TrainerOptions.MaxSteps"/>; a fresh run that writes checkpoints must not mix them
    /// with an earlier run's (the newest would be resumed, and pruning would delete the wrong ones).
    /// </summary>
    private string? CheckResume()
    {
        string? latest = Trainer.LatestCheckpoint(Options.OutputDir);
        if (Options.Resume)
        {
            if (latest == null)
                throw new ArgumentException(
                    $"FineTuneOptions.Resume is set but '{Options.OutputDir}' holds no checkpoint (checkpoint-N folder) to continue from: turn Resume off to start a fresh run.", nameof(Options));
            int step = Trainer.CheckpointStep(latest) ?? 0;
            if (step >= Options.Trainer.MaxSteps)
                throw new ArgumentException(
                    $"Nothing to train: the newest checkpoint '{latest}' is at step {step}, at or past TrainerOptions.MaxSteps = {Options.Trainer.MaxSteps}: raise MaxSteps above {step} to train further.", nameof(Options));
            return latest;
        }
        if (latest != null && Options.Trainer.CheckpointEvery > 0)
            throw new ArgumentException(
                $"'{Options.OutputDir}' already holds checkpoints of an earlier run ({Path.GetFileName(latest)}): set Resume to continue it, or write to another OutputDir (or delete the checkpoint-N folders) to start over.", nameof(Options));
        return null;
    }

    /// <summary>
    /// Moves <paramref name="names"/> from <paramref name="staging"/> into the output folder, replacing what is there.
    /// The previous entries are first moved aside and restored when a move fails, so the folder never ends up mixed.
    /// </summary>
    private void SwapIn(string staging, string[] names)
    {
        var aside = Path.Combine(staging, ".previous");
        Directory.CreateDirectory(aside);
        var movedAside = new List<string>();
        var movedIn = new List<string>();
        try
        {
            foreach (var name in names)
            {
                var target = Path.Combine(Options.OutputDir, name);
                if (Directory.Exists(target)) Directory.Move(target, Path.Combine(aside, name));
                else if (File.Exists(target)) File.Move(target, Path.Combine(aside, name));
                else continue;
                movedAside.Add(name);
            }
            foreach (var name in names)
            {
                var source = Path.Combine(staging, name);
                var target = Path.Combine(Options.OutputDir, name);
                if (Directory.Exists(source)) Directory.Move(source, target);
                else File.Move(source, target);
                movedIn.Add(name);
            }
        }
        catch
        {
            foreach (var name in movedIn) Move(Path.Combine(Options.OutputDir, name), Path.Combine(staging, name));
            foreach (var name in movedAside) Move(Path.Combine(aside, name), Path.Combine(Options.OutputDir, name));
            throw;
        }

        static void Move(string from, string to)
        {
            try
            {
                if (Directory.Exists(from)) Directory.Move(from, to);
                else if (File.Exists(from)) File.Move(from, to);
            }
            catch (IOException)
            {
                // Best effort while already failing.
            }
        }
    }

    private static void TryDeleteFolder(string folder)
    {
        try
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A leftover hidden staging folder is harmless.
        }
    }

    /// <summary>Disposes the model when the session loaded it (<see cref="FineTuneSession.Open(FineTuneOptions)"/>).</summary>
    public void Dispose()
    {
        if (_ownsModel) Peft.Dispose();
    }

    private string Continuation(int[] promptIds, int[] allIds)
    {
        // Decoding the continuation alone would drop its leading space (read as a dummy prefix), so decode both.
        string prompt = Tokenizer.Decode(promptIds), all = Tokenizer.Decode(allIds);
        return all.StartsWith(prompt, StringComparison.Ordinal) ? all[prompt.Length..] : Tokenizer.Decode(allIds.AsSpan(promptIds.Length));
    }

    /// <summary>
    /// On resume, starts the run's log (<paramref name="target"/>) with the lines of <paramref name="source"/> up to
    /// <paramref name="step"/>: later lines (the interrupted run's) are about to be redone.
    /// </summary>
    private static void KeepMetricsUpTo(string source, string target, int step)
    {
        var kept = File.ReadLines(source).Where(line =>
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                return doc.RootElement.TryGetProperty("step", out var s) && s.TryGetInt32(out int n) && n <= step;
            }
            catch (JsonException)
            {
                return false; // a line cut short by the interruption
            }
        }).ToList();
        AtomicFile.WriteAllBytes(target, System.Text.Encoding.UTF8.GetBytes(string.Concat(kept.Select(l => l + "\n"))));
    }
}
