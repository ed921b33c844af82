using System.Diagnostics;
using System.Globalization;
using PeftGen.Methods;
using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.Generated;
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
/// The training loop, the one every path takes (<see cref="FineTuneSession"/>, <c>peftgen train</c>, generated
/// <c>CreateTrainer</c>, the QuickStart): per step, the micro-batches' forward, loss and backward, gradient masks,
/// clipping, the optimizer step at the schedule's learning rate, after-step hooks; then evaluation, the metrics line and
/// the checkpoint. Around it: LoRA+ and layer-wise parameter groups asked of the model, 8-bit and paged optimizers, NaN
/// handling, and checkpoints (<see cref="SaveCheckpoint"/>) from which a resumed run continues exactly as an
/// uninterrupted one.
/// </summary>
public sealed partial class Trainer : IDisposable
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
    private readonly HashSet<object> _borrowedHooks = new(ReferenceEqualityComparer.Instance);
    private readonly List<float> _losses = new();
    private readonly List<(int, float)> _evalLosses = new();
    private int _step;
    private int _skipped;

    /// <summary>
    /// A trainer of <paramref name="model"/>'s parameters that require gradients (full fine-tuning, or a model whose
    /// adapters were added by hand). <paramref name="loss"/> computes a batch's scalar loss with the model;
    /// <paramref name="rngs"/> are the random generators the forward pass draws from (dropout), saved in checkpoints.
    /// LoRA+ and layer-wise decay ask the model's layers (<see cref="LearningRateGroups"/>).
    /// </summary>
    public Trainer(Module model, Func<Batch, Tensor> loss, IBatchSource train, TrainerOptions options,
        IBatchSource? eval = null, IReadOnlyList<Rng>? rngs = null)
        : this(new Setup(model, loss, Checked(options), rngs ?? [],
            () => LearningRateGroups.Of(model, options.LoRAPlusRatio, options.LayerwiseLearningRateDecay), () => TrainingHooks.None), train, eval)
    {
    }

    /// <summary>
    /// A trainer of an adapted model, whatever its method: it trains <see cref="IAdaptedModel.TrainedModule"/> in the
    /// method's parameter groups, runs the method's gradient masks and after-step hooks (added first to
    /// <see cref="GradientMasks"/> and <see cref="AfterStepHooks"/>; the model owns them), and checkpoints its random
    /// generators. Settings the model's class declares with attributes (<see cref="IDeclaredTraining"/>: LoRA+,
    /// layer-wise decay) replace those of <paramref name="options"/>.
    /// </summary>
    /// <param name="model">The adapted model.</param>
    /// <param name="train">The training batches.</param>
    /// <param name="options">The training settings.</param>
    /// <param name="eval">Evaluation batches, or null.</param>
    /// <param name="loss">A batch's scalar loss; null uses the causal LM's mean cross-entropy (<see cref="IAdaptedModel.CausalLM"/>).</param>
    /// <exception cref="ArgumentException">No loss is given and the model is not a causal LM, or a setting does not fit the model.</exception>
    public Trainer(IAdaptedModel model, IBatchSource train, TrainerOptions options, IBatchSource? eval = null, Func<Batch, Tensor>? loss = null)
        : this(Setup.Of(model, options, loss), train, eval)
    {
    }

    private Trainer(Setup setup, IBatchSource train, IBatchSource? eval)
    {
        _model = setup.Model ?? throw new ArgumentNullException("model");
        _loss = setup.Loss ?? throw new ArgumentNullException("loss");
        _train = train ?? throw new ArgumentNullException(nameof(train));
        Options = setup.Options;
        _eval = eval;
        _rngs = setup.Rngs;
        _parameters = _model.NamedParameters().Where(p => p.Tensor.RequiresGrad).ToList();
        if (_parameters.Count == 0) throw new InvalidOperationException("The model has no trainable parameters: add an adapter or unfreeze something.");
        _optimizer = CreateOptimizer(Options, setup.Groups());
        _schedule = LearningRateSchedule.FromName(Options.Schedule, Options.LearningRate, Options.WarmupSteps, Options.MaxSteps);
        var hooks = setup.Hooks();
        foreach (var mask in hooks.GradientMasks) GradientMasks.Add(mask);
        foreach (var hook in hooks.AfterStepHooks) AfterStepHooks.Add(hook);
        _borrowedHooks.UnionWith(hooks.GradientMasks);
        _borrowedHooks.UnionWith(hooks.AfterStepHooks);
    }

    /// <summary>What the two public constructors resolve: the module, loss, options, generators, groups and hooks.</summary>
    private sealed record Setup(Module Model, Func<Batch, Tensor> Loss, TrainerOptions Options, IReadOnlyList<Rng> Rngs,
        Func<IReadOnlyList<ParameterGroup>> Groups, Func<TrainingHooks> Hooks)
    {
        /// <summary>An adapted model's: the class's declared settings win over the options (as generated <c>CreateTrainer</c> always did).</summary>
        public static Setup Of(IAdaptedModel model, TrainerOptions options, Func<Batch, Tensor>? loss)
        {
            ArgumentNullException.ThrowIfNull(model);
            ArgumentNullException.ThrowIfNull(options);
            var module = model.TrainedModule;
            options = Checked(module is IDeclaredTraining declared ? declared.ApplyTo(options) : options);
            return new Setup(module, loss ?? CausalLoss(model), options, model.RandomGenerators,
                () => model.ParameterGroups(options.LoRAPlusRatio, options.LayerwiseLearningRateDecay), model.PrepareTraining);
        }
    }

    /// <summary>The settings (with the model class's declared ones in place, for an adapted model).</summary>
    public TrainerOptions Options { get; }

    /// <summary>Optimizer steps completed.</summary>
    public int Step => _step;

    /// <summary>The optimizer (for inspection).</summary>
    public IOptimizer Optimizer => _optimizer;

    /// <summary>
    /// Called after every applied optimizer step, in order (e.g. a <c>DeltaLoRAUpdater</c> moving the base); the adapted
    /// model's come first. Hooks added here are disposed with the trainer when disposable; the model's are the model's.
    /// </summary>
    public IList<IAfterStepHook> AfterStepHooks { get; } = new List<IAfterStepHook>();

    /// <summary>Called once per step after backward and before clipping, in order (e.g. sparse fine-tuning's mask); disposed like <see cref="AfterStepHooks"/>.</summary>
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

    /// <summary>One optimizer step: forward, loss and backward per micro-batch, masks, clipping, update, hooks.</summary>
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
            if (Options.OnNonFinite == NonFinitePolicy.Stop) throw NonFinite(mean, norm, lr);
            _skipped++;
            return (float.NaN, norm, tokens);
        }
        _optimizer.LearningRate = lr;
        _optimizer.Step();
        _optimizer.ZeroGrad();
        foreach (var hook in AfterStepHooks) hook.AfterStep(_step + 1);
        return (mean, norm, tokens);
    }

    private InvalidOperationException NonFinite(float mean, float norm, float lr)
    {
        string kind = float.IsFinite(mean) ? "gradient norm" : "loss";
        var e = new InvalidOperationException(
            $"Non-finite {kind} ({(float.IsFinite(mean) ? norm : mean).ToString(CultureInfo.InvariantCulture)}) at step {_step + 1}: lower the learning rate (now {lr.ToString(CultureInfo.InvariantCulture)}), check the data, or set OnNonFinite = SkipStep to skip such steps.");
        e.Data[NonFiniteStepKey] = _step + 1;
        e.Data[NonFiniteKindKey] = kind;
        e.Data[NonFiniteLearningRateKey] = lr;
        return e;
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

    private static IOptimizer CreateOptimizer(TrainerOptions options, IReadOnlyList<ParameterGroup> groups) => options.Optimizer switch
    {
        OptimizerKind.AdamW => new AdamW(groups, options.LearningRate, weightDecay: options.WeightDecay),
        OptimizerKind.PagedAdamW => new AdamW(groups, options.LearningRate, weightDecay: options.WeightDecay, paged: true),
        OptimizerKind.AdamW8bit => new AdamW8bit(groups, options.LearningRate, weightDecay: options.WeightDecay),
        OptimizerKind.PagedAdamW8bit => new AdamW8bit(groups, options.LearningRate, weightDecay: options.WeightDecay, paged: true),
        _ => throw new ArgumentOutOfRangeException(nameof(options), options.Optimizer, "unknown optimizer"),
    };

    private static TrainerOptions Checked(TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return options;
    }

    /// <summary>The causal LM's mean cross-entropy over a batch's scored tokens.</summary>
    private static Func<Batch, Tensor> CausalLoss(IAdaptedModel model)
    {
        var lm = model.CausalLM
            ?? throw new ArgumentException($"{model.GetType().Name} adapts a {model.TrainedModule.GetType().Name}, which is not a causal language model: pass the loss function.", nameof(model));
        return b => lm.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length);
    }

    /// <summary>
    /// Releases the optimizer state and the hooks and masks added to the trainer that are <see cref="IDisposable"/> (the
    /// trainer owns what it runs); an adapted model's own hooks stay with the model.
    /// </summary>
    public void Dispose()
    {
        _optimizer.Dispose();
        foreach (var hook in AfterStepHooks.Where(h => !_borrowedHooks.Contains(h)).OfType<IDisposable>()) hook.Dispose();
        foreach (var mask in GradientMasks.Where(m => !_borrowedHooks.Contains(m)).OfType<IDisposable>()) mask.Dispose();
    }
}
