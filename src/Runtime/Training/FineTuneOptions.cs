using PeftGen.Data;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Training;

/// <summary>
/// Settings of a fine-tuning job (<see cref="FineTuneSession"/>): which model and data, the adapter, the batches and
/// the trainer. Defaults follow the QLoRA recipe: NF4 with double quantization, LoRA on all linear layers, constant
/// learning rate 2e-4, gradient-norm limit 0.3.
/// </summary>
public sealed record FineTuneOptions
{
    /// <summary>A Hugging Face model folder or a llama2.c checkpoint; needed by <see cref="FineTuneSession.Open(FineTuneOptions)"/> only.</summary>
    public string? ModelPath { get; init; }

    /// <summary>The tokenizer; null looks beside the model (see <see cref="PretrainedModel"/>).</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>The JSONL dataset: text, Alpaca or chat records (see <see cref="JsonlDataset"/>).</summary>
    public required string DataPath { get; init; }

    /// <summary>
    /// Where results go: <c>adapter/</c> (PEFT format), <c>metrics.jsonl</c>, <c>loss.svg</c> and, when enabled,
    /// <c>checkpoint-N/</c> folders.
    /// </summary>
    public string OutputDir { get; init; } = "peftgen-output";

    /// <summary>The LoRA adapter <see cref="FineTuneSession.Open(FineTuneOptions)"/> adds (ignored by the other entry points, which are given the adapted model or how to adapt it).</summary>
    public LoRAConfig LoRA { get; init; } = new() { Rank = 8, Alpha = 16, Dropout = 0.05f, Targets = TargetModules.AllLinear };

    /// <summary>QLoRA: how <see cref="FineTuneSession.Open(FineTuneOptions)"/> stores the adapted layers' base weights; null trains plain LoRA on float weights.</summary>
    public QuantizationConfig? Quantization { get; init; } = new();

    /// <summary>How the JSONL file is read: record kind, chat format, longest example, response-only loss.</summary>
    public JsonlDatasetOptions Dataset { get; init; } = new() { MaxSequenceLength = 512 };

    /// <summary>Rows per micro-batch.</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>Pack examples into full rows of <see cref="JsonlDatasetOptions.MaxSequenceLength"/> tokens.</summary>
    public bool Pack { get; init; }

    /// <summary>Share of examples held out for evaluation, in [0, 1); 0 evaluates nothing.</summary>
    public double EvalFraction { get; init; }

    /// <summary>Seed of the data shuffle and the train/eval split.</summary>
    public int Seed { get; init; }

    /// <summary>The trainer's settings (steps, learning rate, schedule, optimizer, checkpoints…); its OutputDir is replaced by <see cref="OutputDir"/>.</summary>
    public TrainerOptions Trainer { get; init; } = new();

    /// <summary>Recompute decoder layers in backward instead of storing their activations (less memory, ≈30% more time).</summary>
    public bool GradientCheckpointing { get; init; }

    /// <summary>
    /// Continue from the newest checkpoint in <see cref="OutputDir"/>. <see cref="FineTuneSession{TAdapted}.Train"/>
    /// throws <see cref="ArgumentException"/> when there is none, or when it is already at or past
    /// <see cref="TrainerOptions.MaxSteps"/> (nothing to train).
    /// </summary>
    public bool Resume { get; init; }

    /// <summary>Where the model runs (checked by <see cref="ComputeDevice.Require"/>).</summary>
    public Device Device { get; init; } = Device.Cpu;

    /// <summary>Written as <c>base_model_name_or_path</c> in <c>adapter_config.json</c>; null uses <see cref="ModelPath"/>.</summary>
    public string? BaseModelName { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(DataPath)) throw new ArgumentException("FineTuneOptions.DataPath is empty: name a JSONL dataset.", nameof(DataPath));
        if (string.IsNullOrWhiteSpace(OutputDir)) throw new ArgumentException("FineTuneOptions.OutputDir is empty: name an output folder.", nameof(OutputDir));
        if (BatchSize < 1) throw new ArgumentException($"FineTuneOptions.BatchSize = {BatchSize}: must be ≥ 1.", nameof(BatchSize));
        if (!(EvalFraction >= 0 && EvalFraction < 1)) throw new ArgumentException($"FineTuneOptions.EvalFraction = {EvalFraction}: must be in [0, 1).", nameof(EvalFraction));
        if (Dataset.MaxSequenceLength < 1) throw new ArgumentException($"FineTuneOptions.Dataset.MaxSequenceLength = {Dataset.MaxSequenceLength}: must be ≥ 1.", nameof(Dataset));
        LoRA.Validate();
        // The session writes checkpoints into OutputDir (it replaces the trainer's), so check the trainer with it.
        (Trainer with { OutputDir = OutputDir }).Validate();
    }
}
