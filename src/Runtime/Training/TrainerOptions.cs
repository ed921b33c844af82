namespace PeftGen.Training;

/// <summary>The optimizer a <see cref="Trainer"/> builds.</summary>
public enum OptimizerKind
{
    /// <summary>fp32 AdamW.</summary>
    AdamW,
    /// <summary>AdamW with 8-bit block-wise moments.</summary>
    AdamW8bit,
    /// <summary>fp32 AdamW with state in pageable (memory-mapped) memory: QLoRA's paged optimizer.</summary>
    PagedAdamW,
    /// <summary>8-bit AdamW with paged state.</summary>
    PagedAdamW8bit,
}

/// <summary>What happens when a step's loss or gradient norm is NaN or infinite.</summary>
public enum NonFinitePolicy
{
    /// <summary>Stop with an exception naming the step (the default: a diverged run should be looked at).</summary>
    Stop,
    /// <summary>Skip the update, count it, and continue.</summary>
    SkipStep,
}

/// <summary>Settings of <see cref="Trainer"/>; defaults follow the QLoRA recipe where it has one.</summary>
public sealed record TrainerOptions
{
    /// <summary>Optimizer steps to run.</summary>
    public int MaxSteps { get; init; } = 100;

    /// <summary>Micro-batches whose gradients are summed (and averaged) per optimizer step.</summary>
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Peak learning rate (QLoRA: 2e-4 for 7B/13B).</summary>
    public float LearningRate { get; init; } = 2e-4f;

    /// <summary>"constant" (QLoRA), "linear" or "cosine".</summary>
    public string Schedule { get; init; } = "constant";

    /// <summary>Warmup steps (QLoRA: 3% of the run).</summary>
    public int WarmupSteps { get; init; }

    /// <summary>Global gradient-norm limit (QLoRA: 0.3); 0 disables clipping.</summary>
    public float MaxGradNorm { get; init; } = 0.3f;

    /// <summary>AdamW decoupled weight decay.</summary>
    public float WeightDecay { get; init; }

    /// <summary>Optimizer (QLoRA: paged AdamW).</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;

    /// <summary>LoRA+: learning rate of B matrices = ratio × that of A (recommended 16); 0 or 1 disables.</summary>
    public float LoRAPlusRatio { get; init; }

    /// <summary>
    /// Layer-wise learning-rate decay γ in (0, 1]: decoder layer i of L trains at lr·γ^(L−1−i), the token embedding at
    /// lr·γ^L, the head and final norm at lr (see <see cref="Optim.LayerwiseLearningRate"/>); 1 disables.
    /// </summary>
    public float LayerwiseLearningRateDecay { get; init; } = 1f;

    /// <summary>Evaluate every this many steps (0: only at the end, when an eval source is given).</summary>
    public int EvalEvery { get; init; }

    /// <summary>Eval batches per evaluation.</summary>
    public int EvalBatches { get; init; } = 4;

    /// <summary>Write a checkpoint every this many steps (0: never). Needs <see cref="OutputDir"/>.</summary>
    public int CheckpointEvery { get; init; }

    /// <summary>Checkpoints kept (oldest deleted first).</summary>
    public int KeepCheckpoints { get; init; } = 2;

    /// <summary>Where checkpoints and metrics go.</summary>
    public string? OutputDir { get; init; }

    /// <summary>
    /// Where the metrics log is appended; null: <c>metrics.jsonl</c> in <see cref="OutputDir"/> (nothing when that is
    /// null too). Each checkpoint keeps a copy of the log up to its step, from which a resumed run continues it.
    /// </summary>
    public string? MetricsPath { get; init; }

    /// <summary>What a NaN or infinite loss does.</summary>
    public NonFinitePolicy OnNonFinite { get; init; } = NonFinitePolicy.Stop;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        void Require(bool ok, string name, object value, string rule)
        {
            if (!ok) throw new ArgumentException($"TrainerOptions.{name} = {value}: {rule}.", name);
        }
        Require(MaxSteps >= 1, nameof(MaxSteps), MaxSteps, "must be ≥ 1");
        Require(GradientAccumulationSteps >= 1, nameof(GradientAccumulationSteps), GradientAccumulationSteps, "must be ≥ 1");
        Require(LearningRate >= 0 && float.IsFinite(LearningRate), nameof(LearningRate), LearningRate, "must be a finite value ≥ 0");
        Require(MaxGradNorm >= 0 && float.IsFinite(MaxGradNorm), nameof(MaxGradNorm), MaxGradNorm, "must be a finite value ≥ 0");
        Require(WeightDecay >= 0 && float.IsFinite(WeightDecay), nameof(WeightDecay), WeightDecay, "must be a finite value ≥ 0");
        Require(WarmupSteps >= 0 && WarmupSteps <= MaxSteps, nameof(WarmupSteps), WarmupSteps, $"must be in [0, MaxSteps = {MaxSteps}]");
        Require(LoRAPlusRatio >= 0 && float.IsFinite(LoRAPlusRatio), nameof(LoRAPlusRatio), LoRAPlusRatio, "must be ≥ 0");
        Require(LayerwiseLearningRateDecay > 0 && LayerwiseLearningRateDecay <= 1, nameof(LayerwiseLearningRateDecay), LayerwiseLearningRateDecay, "must be in (0, 1]; 1 disables layer-wise decay");
        Require(CheckpointEvery >= 0, nameof(CheckpointEvery), CheckpointEvery, "must be ≥ 0");
        Require(CheckpointEvery == 0 || OutputDir != null, nameof(OutputDir), "null", $"is needed to write checkpoints (CheckpointEvery = {CheckpointEvery})");
        Require(KeepCheckpoints >= 1, nameof(KeepCheckpoints), KeepCheckpoints, "must be ≥ 1");
        Require(EvalEvery >= 0 && EvalBatches >= 1, nameof(EvalEvery), EvalEvery, "must be ≥ 0 with EvalBatches ≥ 1");
        Require(Schedule is "constant" or "linear" or "cosine", nameof(Schedule), Schedule, "must be constant, linear or cosine");
    }
}
