using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using PeftGen.Autograd;
using PeftGen.Nn;
using PeftGen.Optim;
using PeftGen.Tensors;

namespace PeftGen.Training;

/// <summary>What the trainer reports after each optimizer step.</summary>
/// <param name="Step">1-based step just finished.</param>
/// <param name="MaxSteps">Steps planned.</param>
/// <param name="Loss">Mean training loss over the step's micro-batches (NaN for a skipped step).</param>
/// <param name="LearningRate">Learning rate of the step.</param>
/// <param name="GradNorm">Gradient norm before clipping (NaN when clipping is off).</param>
/// <param name="TokensPerSecond">Input tokens per second of the step.</param>
/// <param name="EvalLoss">Evaluation loss, when this step evaluated.</param>
/// <param name="SkippedSteps">Steps skipped so far for non-finite values.</param>
/// <param name="Elapsed">Wall time since training started (or resumed).</param>
/// <param name="PeakResidentBytes">The process's peak resident set so far (Linux VmHWM), in bytes; 0 when unknown.</param>
public readonly record struct TrainerProgress(int Step, int MaxSteps, float Loss, float LearningRate, float GradNorm,
    double TokensPerSecond, float? EvalLoss, int SkippedSteps, TimeSpan Elapsed, long PeakResidentBytes = 0);

/// <summary>The outcome of <see cref="Trainer.Train"/>.</summary>
/// <param name="Losses">Training loss of every step from step 1 (steps before a resume come from the checkpoint).</param>
/// <param name="EvalLosses">(step, loss) of each evaluation.</param>
/// <param name="SkippedSteps">Steps skipped for non-finite values.</param>
public sealed record TrainResult(IReadOnlyList<float> Losses, IReadOnlyList<(int Step, float Loss)> EvalLosses, int SkippedSteps);

/// <summary>
/// Trains the parameters of a model that require gradients: gradient accumulation, schedules, clipping, LoRA+
/// groups, 8-bit and paged optimizers, evaluation, metrics, NaN handling, and checkpoints (trainable weights,
/// optimizer state, schedule position, random generators and data position, written atomically) from which a
/// resumed run continues exactly as an uninterrupted one.
/// </summary>
public sealed class Trainer : IDisposable
{
    private const string StateFile = "trainer_state.json";
    private const string WeightsFile = "trainable.bin";
    private const string OptimizerFile = "optimizer.bin";
    private const string CheckpointPrefix = "checkpoint-";

    /// <summary>
    /// Key in <see cref="Exception.Data"/> of the <see cref="InvalidOperationException"/> a non-finite loss or gradient
    /// norm throws under <see cref="NonFinitePolicy.Stop"/>: the 1-based step (an int).
    /// </summary>
    public const string NonFiniteStepKey = "PeftGen.Training.NonFiniteStep";

    /// <summary>Key in <see cref="Exception.Data"/> of that exception: the non-finite value's kind, "loss" or "gradient norm".</summary>
    public const string NonFiniteKindKey = "PeftGen.Training.NonFiniteKind";

    /// <summary>Key in <see cref="Exception.Data"/> of that exception: the learning rate of the step (a float).</summary>
    public const string NonFiniteLearningRateKey = "PeftGen.Training.NonFiniteLearningRate";

    private readonly Module _model;
    private readonly Func<Batch, Tensor> _loss;
    private readonly IBatchSource _train;
    private readonly IBatchSource? _eval;
    private readonly IReadOnlyList<Rng> _rngs;
    private readonly List<(string Path, Tensor Tensor)> _parameters;
    private readonly IOptimizer _optimizer;
    private readonly LearningRateSchedule _schedule;
    private readonly List<float> _losses = new();
    private readonly List<(int, float)> _evalLosses = new();
    private int _step;
    private int _skipped;

    /// <summary>
    /// Creates a trainer. <paramref name="loss"/> computes a batch's scalar loss with the model;
    /// <paramref name="rngs"/> are the random generators the forward pass draws from (dropout), saved in checkpoints.
    /// </summary>
    public Trainer(Module model, Func<Batch, Tensor> loss, IBatchSource train, TrainerOptions options,
        IBatchSource? eval = null, IReadOnlyList<Rng>? rngs = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _loss = loss ?? throw new ArgumentNullException(nameof(loss));
        _train = train ?? throw new ArgumentNullException(nameof(train));
        Options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        _eval = eval;
        _rngs = rngs ?? [];
        _parameters = model.NamedParameters().Where(p => p.Tensor.RequiresGrad).ToList();
        if (_parameters.Count == 0) throw new InvalidOperationException("The model has no trainable parameters: add an adapter or unfreeze something.");
        _optimizer = CreateOptimizer(options, _parameters, LayerwiseLearningRate.CountLayers(model.NamedParameters().Select(p => p.Path)));
        _schedule = LearningRateSchedule.FromName(options.Schedule, options.LearningRate, options.WarmupSteps, options.MaxSteps);
    }

    /// <summary>The settings.</summary>
    public TrainerOptions Options { get; }

    /// <summary>Optimizer steps completed.</summary>
    public int Step => _step;

    /// <summary>The optimizer (for inspection).</summary>
    public IOptimizer Optimizer => _optimizer;

    /// <summary>Called after every applied optimizer step, in order (e.g. a <c>DeltaLoRAUpdater</c> moving the base); disposed with the trainer when disposable.</summary>
    public IList<IAfterStepHook> AfterStepHooks { get; } = new List<IAfterStepHook>();

    /// <summary>Called once per step after backward and before clipping, in order (e.g. sparse fine-tuning's mask).</summary>
    public IList<IGradientMask> GradientMasks { get; } = new List<IGradientMask>();

    /// <summary>Test hook: called with each checkpoint file just before it is written (a throw simulates a crash mid-write).</summary>
    internal Action<string>? BeforeCheckpointFileWrite { get; set; }

    /// <summary>Runs until <see cref="TrainerOptions.MaxSteps"/>.</summary>
    /// <exception cref="InvalidOperationException">A non-finite loss with <see cref="NonFinitePolicy.Stop"/> (names the step).</exception>
    public TrainResult Train(IProgress<TrainerProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        _model.Train();
        while (_step < Options.MaxSteps)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var stepClock = Stopwatch.StartNew();
            float lr = _schedule.At(_step);
            var (loss, norm, tokens) = RunStep(lr);
            double tokensPerSecond = tokens / stepClock.Elapsed.TotalSeconds;
            _step++;
            _losses.Add(loss);
            float? evalLoss = null;
            if (_eval != null && ((Options.EvalEvery > 0 && _step % Options.EvalEvery == 0) || _step == Options.MaxSteps))
            {
                evalLoss = Evaluate();
                _evalLosses.Add((_step, evalLoss.Value));
            }
            var report = new TrainerProgress(_step, Options.MaxSteps, loss, lr, norm, tokensPerSecond,
                evalLoss, _skipped, clock.Elapsed, ProcessMemory.PeakResidentBytes);
            // The step's metrics line comes before its checkpoint, which keeps a copy of the log up to its step.
            if (MetricsFile is { } metrics) MetricsJsonl.Append(metrics, report);
            if (Options.CheckpointEvery > 0 && (_step % Options.CheckpointEvery == 0 || _step == Options.MaxSteps))
                SaveCheckpoint(Path.Combine(Options.OutputDir!, CheckpointPrefix + _step.ToString(CultureInfo.InvariantCulture)));
            progress?.Report(report);
        }
        return new TrainResult(_losses.ToArray(), _evalLosses.ToArray(), _skipped);
    }

    private (float Loss, float Norm, long Tokens) RunStep(float lr)
    {
        double total = 0;
        long tokens = 0;
        int accumulation = Options.GradientAccumulationSteps;
        for (int micro = 0; micro < accumulation; micro++)
        {
            var batch = _train.Next();
            batch.Validate();
            tokens += batch.Inputs.Length;
            using var scope = TensorScope.Begin();
            var loss = _loss(batch);
            float value = loss.Item();
            total += value;
            if (!float.IsFinite(value)) break;
            // Mean over micro-batches: each contributes 1/G of its gradient.
            (accumulation == 1 ? loss : Ops.Scale(loss, 1f / accumulation)).Backward();
        }
        float mean = (float)(total / accumulation);
        foreach (var mask in GradientMasks) mask.MaskGradients();
        float norm = Options.MaxGradNorm > 0 ? GradientClipping.ClipGlobalNorm(_optimizer.AllParameters(), Options.MaxGradNorm) : float.NaN;
        bool finite = float.IsFinite(mean) && (Options.MaxGradNorm == 0 || float.IsFinite(norm));
        if (!finite)
        {
            _optimizer.ZeroGrad();
            if (Options.OnNonFinite == NonFinitePolicy.Stop)
            {
                string kind = float.IsFinite(mean) ? "gradient norm" : "loss";
                var e = new InvalidOperationException(
                    $"Non-finite {kind} ({(float.IsFinite(mean) ? norm : mean).ToString(CultureInfo.InvariantCulture)}) at step {_step + 1}: lower the learning rate (now {lr.ToString(CultureInfo.InvariantCulture)}), check the data, or set OnNonFinite = SkipStep to skip such steps.");
                e.Data[NonFiniteStepKey] = _step + 1;
                e.Data[NonFiniteKindKey] = kind;
                e.Data[NonFiniteLearningRateKey] = lr;
                throw e;
            }
            _skipped++;
            return (float.NaN, norm, tokens);
        }
        _optimizer.LearningRate = lr;
        _optimizer.Step();
        _optimizer.ZeroGrad();
        foreach (var hook in AfterStepHooks) hook.AfterStep(_step + 1);
        return (mean, norm, tokens);
    }

    /// <summary>Mean loss over <see cref="TrainerOptions.EvalBatches"/> batches of the eval source, without gradients or dropout.</summary>
    public float Evaluate()
    {
        if (_eval == null) throw new InvalidOperationException("No evaluation data was given to the trainer.");
        try
        {
            return EvaluateLoss(_model, _loss, _eval, Options.EvalBatches);
        }
        finally
        {
            _model.Train();
        }
    }

    /// <summary>
    /// The evaluation loss as <see cref="Evaluate"/> computes it: the mean of <paramref name="loss"/> over the next
    /// <paramref name="batchCount"/> batches of <paramref name="batches"/> (each batch's loss is its own mean over its
    /// scored tokens), in evaluation mode (no dropout) and without gradients. The model is left in evaluation mode.
    /// </summary>
    /// <param name="model">The model, switched to evaluation mode.</param>
    /// <param name="loss">A batch's scalar loss with the model.</param>
    /// <param name="batches">The batches; <see cref="IBatchSource.Next"/> is called <paramref name="batchCount"/> times.</param>
    /// <param name="batchCount">Batches to average, 1 or more.</param>
    /// <returns>The mean loss (NaN or infinite when a batch's is).</returns>
    public static float EvaluateLoss(Module model, Func<Batch, Tensor> loss, IBatchSource batches, int batchCount)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(loss);
        ArgumentNullException.ThrowIfNull(batches);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchCount, 1);
        model.Eval();
        double total = 0;
        using var noGrad = GradMode.Disable();
        for (int i = 0; i < batchCount; i++)
        {
            using var scope = TensorScope.Begin();
            total += loss(batches.Next()).Item();
        }
        return (float)(total / batchCount);
    }

    // ---- checkpoints -------------------------------------------------------------------------------------

    /// <summary>
    /// Writes a checkpoint folder atomically: everything goes to a temporary sibling folder that is renamed into
    /// place only when complete, so a crash mid-write leaves the previous checkpoints untouched and no partial one.
    /// </summary>
    public void SaveCheckpoint(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        var full = Path.GetFullPath(directory);
        var parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        var temp = Path.Combine(parent, $".{Path.GetFileName(full)}.partial-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            WriteFile(Path.Combine(temp, WeightsFile), stream =>
            {
                using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
                w.Write("PeftGen.TrainableWeights");
                w.Write(_parameters.Count);
                foreach (var (path, tensor) in _parameters)
                {
                    w.Write(path);
                    w.Write(tensor.Count);
                    // A GPU parameter (--device cuda) is written from a host copy; the file is the same.
                    w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(
                        tensor.Device.Type == DeviceType.Cpu ? tensor.AsSpan() : tensor.ToArray().AsSpan()));
                }
            });
            WriteFile(Path.Combine(temp, OptimizerFile), stream =>
            {
                using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
                _optimizer.WriteState(w);
            });
            var state = new CheckpointState
            {
                Step = _step,
                DataPosition = _train.Position,
                EvalPosition = _eval?.Position,
                RngStates = _rngs.Select(r => r.State).ToArray(),
                Losses = _losses.ToArray(),
                EvalSteps = _evalLosses.Select(e => e.Item1).ToArray(),
                EvalLosses = _evalLosses.Select(e => e.Item2).ToArray(),
                SkippedSteps = _skipped,
                MaxSteps = Options.MaxSteps,
                LearningRate = Options.LearningRate,
                Schedule = Options.Schedule,
            };
            WriteFile(Path.Combine(temp, StateFile), stream =>
                JsonSerializer.Serialize(stream, state, TrainerJsonContext.Default.CheckpointState));
            // The metrics log up to this step, from which a resumed run continues its log (see MetricsFile).
            if (MetricsFile is { } metrics && File.Exists(metrics)) File.Copy(metrics, Path.Combine(temp, MetricsJsonl.FileName));
            if (Directory.Exists(full))
            {
                var old = full + $".old-{Guid.NewGuid():N}";
                Directory.Move(full, old);
                Directory.Move(temp, full);
                Directory.Delete(old, recursive: true);
            }
            else Directory.Move(temp, full);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        PruneCheckpoints(parent);
    }

    /// <summary>Restores weights, optimizer, schedule position, random generators and data position from a checkpoint folder.</summary>
    /// <exception cref="InvalidDataException">The folder is incomplete or does not belong to this model/optimizer (names the file).</exception>
    public void LoadCheckpoint(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        foreach (var file in (string[])[StateFile, WeightsFile, OptimizerFile])
            if (!File.Exists(Path.Combine(directory, file)))
                throw new InvalidDataException($"{directory} is not a complete checkpoint: {file} is missing.");
        CheckpointState state;
        var statePath = Path.Combine(directory, StateFile);
        try
        {
            state = JsonSerializer.Deserialize(File.ReadAllText(statePath), TrainerJsonContext.Default.CheckpointState)
                ?? throw new InvalidDataException($"{statePath} is empty.");
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or ArgumentException)
        {
            throw new InvalidDataException($"{statePath} is not valid checkpoint state: {Quote(e.Message, 200)}", e);
        }
        void RequireState(bool ok, string field, object? value, string rule)
        {
            if (!ok) throw new InvalidDataException($"{statePath}: \"{field}\" = {Quote(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "null")} {rule}.");
        }
        // A field written as null in the JSON reads as null despite its type: treat it as empty (then reported below).
        state.Losses ??= [];
        state.EvalSteps ??= [];
        state.EvalLosses ??= [];
        state.RngStates ??= [];
        RequireState(state.Step >= 0, "step", state.Step, "must be ≥ 0");
        RequireState(state.DataPosition >= 0, "data_position", state.DataPosition, "must be ≥ 0");
        RequireState(state.EvalPosition is null or >= 0, "eval_position", state.EvalPosition, "must be ≥ 0");
        RequireState(state.SkippedSteps >= 0 && state.SkippedSteps <= state.Step, "skipped_steps", state.SkippedSteps, $"must be in [0, step = {state.Step}]");
        RequireState(state.Losses.Length == state.Step, "losses", $"[{state.Losses.Length} values]", $"must hold one value per step ({state.Step})");
        RequireState(state.EvalSteps.Length == state.EvalLosses.Length,
            "eval_steps", $"[{state.EvalSteps.Length} values]", $"must match the {state.EvalLosses.Length} values of \"eval_losses\"");
        RequireState(state.RngStates.Length == _rngs.Count, "rng_states", $"[{state.RngStates.Length} states]",
            $"must hold one state per random generator of this run ({_rngs.Count})");

        var weightsPath = Path.Combine(directory, WeightsFile);
        using (var r = new BinaryReader(File.OpenRead(weightsPath)))
        {
            try
            {
                if (r.ReadString() != "PeftGen.TrainableWeights") throw new InvalidDataException($"{weightsPath} is not a PeftGen weights file.");
                int count = r.ReadInt32();
                var byPath = _parameters.ToDictionary(p => p.Path, p => p.Tensor);
                if (count != byPath.Count)
                    throw new InvalidDataException($"{weightsPath} holds {count} trainable tensors; the model has {byPath.Count} (different adapters or targets?).");
                for (int i = 0; i < count; i++)
                {
                    string path = r.ReadString();
                    long n = r.ReadInt64();
                    if (!byPath.TryGetValue(path, out var t))
                        throw new InvalidDataException($"{weightsPath}: tensor '{Quote(path)}' is not a trainable parameter of this model.");
                    if (n != t.Count)
                        throw new InvalidDataException($"{weightsPath}: '{path}' has {n} values; the model's has {t.Count}.");
                    if (t.Device.Type == DeviceType.Cpu) r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.AsSpan()));
                    else
                    {
                        // A GPU parameter is read into a host tensor, then copied to the device.
                        using var host = Tensor.Zeros(t.ShapeArray);
                        r.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(host.AsSpan()));
                        t.CopyFrom(host);
                    }
                }
            }
            catch (EndOfStreamException e)
            {
                throw new InvalidDataException($"{weightsPath} is truncated.", e);
            }
            catch (Exception e) when (e is not InvalidDataException and not OutOfMemoryException)
            {
                throw new InvalidDataException($"{weightsPath} is not a valid weights file: {Quote(e.Message)}", e);
            }
        }
        var optimizerPath = Path.Combine(directory, OptimizerFile);
        using (var r = new BinaryReader(File.OpenRead(optimizerPath)))
        {
            try
            {
                _optimizer.ReadState(r);
            }
            catch (EndOfStreamException e)
            {
                throw new InvalidDataException($"{optimizerPath} is truncated.", e);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // The optimizer's message may quote what it read (a corrupt file's bytes): quote at most 100 characters.
                throw new InvalidDataException(
                    $"{optimizerPath} does not hold the state of this run's optimizer ({Options.Optimizer}): {Quote(e.Message)}", e);
            }
        }
        for (int i = 0; i < _rngs.Count; i++)
        {
            try
            {
                _rngs[i].State = state.RngStates[i];
            }
            catch (ArgumentException e)
            {
                throw new InvalidDataException($"{statePath}: \"rng_states\"[{i}] is not a generator state: {Quote(e.Message)}", e);
            }
        }
        _train.Position = state.DataPosition;
        if (_eval != null && state.EvalPosition is long evalPosition) _eval.Position = evalPosition;
        _step = state.Step;
        _skipped = state.SkippedSteps;
        _losses.Clear();
        _losses.AddRange(state.Losses);
        _evalLosses.Clear();
        _evalLosses.AddRange(state.EvalSteps.Zip(state.EvalLosses));
    }

    /// <summary>The newest complete checkpoint folder under <paramref name="outputDir"/>, or null.</summary>
    public static string? LatestCheckpoint(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return null;
        return CompleteCheckpoints(outputDir).LastOrDefault().Path;
    }

    private static List<(int Step, string Path)> CompleteCheckpoints(string outputDir) =>
        Directory.GetDirectories(outputDir, CheckpointPrefix + "*")
            .Select(d => (Ok: int.TryParse(Path.GetFileName(d)[CheckpointPrefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int s), Step: s, Path: d))
            .Where(c => c.Ok && File.Exists(Path.Combine(c.Path, StateFile)))
            .OrderBy(c => c.Step)
            .Select(c => (c.Step, c.Path))
            .ToList();

    private void PruneCheckpoints(string outputDir)
    {
        var all = CompleteCheckpoints(outputDir);
        foreach (var (_, path) in all.Take(Math.Max(0, all.Count - Options.KeepCheckpoints))) TryDelete(path);
    }

    private void WriteFile(string path, Action<Stream> write)
    {
        BeforeCheckpointFileWrite?.Invoke(path);
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        write(stream);
        stream.Flush(flushToDisk: true);
    }

    private static void TryDelete(string directory)
    {
        try
        {
            if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover temporary folder is ignored by LatestCheckpoint.
        }
    }

    /// <summary>Where metrics lines go: <see cref="TrainerOptions.MetricsPath"/>, else metrics.jsonl in the output folder, else nowhere.</summary>
    private string? MetricsFile => Options.MetricsPath ?? (Options.OutputDir is { } dir ? Path.Combine(dir, MetricsJsonl.FileName) : null);

    /// <summary>The metrics log a checkpoint folder keeps (the log up to its step), or null for a checkpoint written without one.</summary>
    public static string? CheckpointMetrics(string checkpointDir)
    {
        var path = Path.Combine(checkpointDir, MetricsJsonl.FileName);
        return File.Exists(path) ? path : null;
    }

    /// <summary>The step of a checkpoint folder, from its name <c>checkpoint-N</c>, or null when the name is not one.</summary>
    public static int? CheckpointStep(string checkpointDir)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(checkpointDir));
        return name.StartsWith(CheckpointPrefix, StringComparison.Ordinal)
            && int.TryParse(name.AsSpan(CheckpointPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int step) ? step : null;
    }

    /// <summary>
    /// Text read from a file, fit to quote in a message: control and non-ASCII characters become '?', and at most
    /// <paramref name="max"/> characters are kept (a corrupt file must never be dumped into an error).
    /// </summary>
    internal static string Quote(string text, int max = 100)
    {
        var chars = text.Take(max + 1).Select(c => c >= ' ' && c <= '~' ? c : '?').ToArray();
        return chars.Length > max ? new string(chars, 0, max) + "…" : new string(chars);
    }

    private static IOptimizer CreateOptimizer(TrainerOptions options, List<(string Path, Tensor Tensor)> parameters, int layerCount)
    {
        // LoRA+: B matrices learn `ratio` times faster than everything else.
        bool loraPlus = options.LoRAPlusRatio > 0 && options.LoRAPlusRatio != 1;
        var groups = new List<ParameterGroup>();
        var rest = parameters.Where(p => !loraPlus || !IsLoraB(p.Path)).Select(p => p.Tensor).ToList();
        if (rest.Count > 0) groups.Add(new ParameterGroup(rest));
        if (loraPlus)
        {
            var b = parameters.Where(p => IsLoraB(p.Path)).Select(p => p.Tensor).ToList();
            if (b.Count == 0) throw new ArgumentException("LoRAPlusRatio is set but the model has no trainable lora_B matrices.", nameof(options));
            groups.Add(new ParameterGroup(b, options.LoRAPlusRatio));
        }
        // Layer-wise decay splits every group by depth; a LoRA+ B matrix gets ratio · decay^(L−1−layer).
        if (options.LayerwiseLearningRateDecay != 1f)
            groups = LayerwiseLearningRate.Groups(parameters, layerCount, options.LayerwiseLearningRateDecay,
                path => loraPlus && IsLoraB(path) ? options.LoRAPlusRatio : 1f).ToList();
        return options.Optimizer switch
        {
            OptimizerKind.AdamW => new AdamW(groups, options.LearningRate, weightDecay: options.WeightDecay),
            OptimizerKind.PagedAdamW => new AdamW(groups, options.LearningRate, weightDecay: options.WeightDecay, paged: true),
            OptimizerKind.AdamW8bit => new AdamW8bit(groups, options.LearningRate, weightDecay: options.WeightDecay),
            OptimizerKind.PagedAdamW8bit => new AdamW8bit(groups, options.LearningRate, weightDecay: options.WeightDecay, paged: true),
            _ => throw new ArgumentOutOfRangeException(nameof(options), options.Optimizer, "unknown optimizer"),
        };
    }

    private static bool IsLoraB(string path) => path.Contains(".lora_B.", StringComparison.Ordinal);

    /// <summary>Releases the optimizer state and the hooks and masks that are <see cref="IDisposable"/> (the trainer owns what it runs).</summary>
    public void Dispose()
    {
        _optimizer.Dispose();
        foreach (var hook in AfterStepHooks.OfType<IDisposable>()) hook.Dispose();
        foreach (var mask in GradientMasks.OfType<IDisposable>()) mask.Dispose();
    }
}

internal sealed class CheckpointState
{
    [JsonPropertyName("format")] public int Format { get; set; } = 1;
    [JsonPropertyName("step")] public int Step { get; set; }
    [JsonPropertyName("data_position")] public long DataPosition { get; set; }
    [JsonPropertyName("eval_position")] public long? EvalPosition { get; set; }
    [JsonPropertyName("rng_states")] public ulong[][] RngStates { get; set; } = [];
    [JsonPropertyName("losses")] public float[] Losses { get; set; } = [];
    [JsonPropertyName("eval_steps")] public int[] EvalSteps { get; set; } = [];
    [JsonPropertyName("eval_losses")] public float[] EvalLosses { get; set; } = [];
    [JsonPropertyName("skipped_steps")] public int SkippedSteps { get; set; }
    [JsonPropertyName("max_steps")] public int MaxSteps { get; set; }
    [JsonPropertyName("learning_rate")] public float LearningRate { get; set; }
    [JsonPropertyName("schedule")] public string Schedule { get; set; } = "";
}

[JsonSourceGenerationOptions(WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(CheckpointState))]
internal sealed partial class TrainerJsonContext : JsonSerializerContext;
