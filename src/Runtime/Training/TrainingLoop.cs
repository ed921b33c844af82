using System.Diagnostics;
using PeftGen.Models.Llama;
using PeftGen.Optim;
using PeftGen.Tensors;

namespace PeftGen.Training;

/// <summary>Settings of <see cref="TrainingLoop"/>.</summary>
public sealed record TrainingOptions
{
    /// <summary>Optimizer steps to take.</summary>
    public int Steps { get; init; } = 100;

    /// <summary>Peak learning rate.</summary>
    public float LearningRate { get; init; } = 3e-4f;

    /// <summary>Linear warmup steps.</summary>
    public int WarmupSteps { get; init; }

    /// <summary>"constant", "linear" or "cosine" decay after warmup.</summary>
    public string Schedule { get; init; } = "cosine";

    /// <summary>Global gradient-norm limit; 0 disables clipping.</summary>
    public float MaxGradNorm { get; init; } = 1f;

    /// <summary>AdamW decoupled weight decay.</summary>
    public float WeightDecay { get; init; }

    /// <summary>Builds the schedule these options describe.</summary>
    public LearningRateSchedule CreateSchedule() => LearningRateSchedule.FromName(Schedule, LearningRate, WarmupSteps, Steps);
}

/// <summary>What the loop reports after each step.</summary>
/// <param name="Step">1-based step just finished.</param>
/// <param name="TotalSteps">Steps planned.</param>
/// <param name="Loss">Mean loss of the step's batch.</param>
/// <param name="LearningRate">Learning rate used for the step.</param>
/// <param name="GradNorm">Global gradient norm before clipping.</param>
/// <param name="TokensPerSecond">Training throughput of the step.</param>
public readonly record struct TrainingProgress(int Step, int TotalSteps, float Loss, float LearningRate, float GradNorm, double TokensPerSecond);

/// <summary>
/// The minimal training loop: forward, loss, backward, clip, AdamW, one <see cref="TensorScope"/> per step.
/// Trains whatever parameters of the model require gradients.
/// </summary>
public static class TrainingLoop
{
    /// <summary>Runs <see cref="TrainingOptions.Steps"/> steps on batches from <paramref name="nextBatch"/> and returns the losses.</summary>
    /// <exception cref="InvalidOperationException">The loss became NaN or infinite (names the step).</exception>
    /// <param name="model">The model; its parameters that require gradients train.</param>
    /// <param name="nextBatch">The batch of each step.</param>
    /// <param name="options">Steps, learning rate, schedule, clipping.</param>
    /// <param name="progress">Receives a report after each step.</param>
    /// <param name="cancellationToken">Stops before the next step.</param>
    /// <param name="afterStep">Called after each optimizer step (e.g. a <c>DeltaLoRAUpdater</c>).</param>
    public static IReadOnlyList<float> Run(LlamaForCausalLM model, Func<int, Batch> nextBatch, TrainingOptions options,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default, IAfterStepHook? afterStep = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(nextBatch);
        ArgumentNullException.ThrowIfNull(options);
        var schedule = options.CreateSchedule();
        var parameters = model.TrainableParameters().ToList();
        if (parameters.Count == 0) throw new InvalidOperationException("The model has no trainable parameters (everything is frozen).");
        using var optimizer = new AdamW(parameters, options.LearningRate, weightDecay: options.WeightDecay);
        var losses = new List<float>(options.Steps);
        model.Train();
        for (int step = 0; step < options.Steps; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var batch = nextBatch(step);
            batch.Validate();
            var clock = Stopwatch.StartNew();
            float loss, norm = float.NaN;
            using (TensorScope.Begin())
            {
                var lossTensor = model.Loss(batch.Inputs, batch.Targets, batch.BatchSize, batch.Length);
                loss = lossTensor.Item();
                if (!float.IsFinite(loss))
                    throw new InvalidOperationException($"The loss became {loss} at step {step + 1}: lower the learning rate (now {schedule.At(step)}) or check the data.");
                lossTensor.Backward();
                if (options.MaxGradNorm > 0) norm = GradientClipping.ClipGlobalNorm(parameters, options.MaxGradNorm);
                optimizer.LearningRate = schedule.At(step);
                optimizer.Step();
                optimizer.ZeroGrad();
                afterStep?.AfterStep(step + 1);
            }
            losses.Add(loss);
            progress?.Report(new TrainingProgress(step + 1, options.Steps, loss, schedule.At(step), norm,
                batch.Inputs.Length / clock.Elapsed.TotalSeconds));
        }
        return losses;
    }
}
