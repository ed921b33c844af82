using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Optim;
using PeftGen.Tensors;

namespace PeftGen.Methods;

/// <summary>
/// A model with a PEFT method applied, as the trainer sees it: which module trains, in which learning-rate groups, what
/// runs around each optimizer step, which random generators a checkpoint saves, how the result is saved, and the
/// causal language model that computes the loss and generates text. Every method's model wrapper implements it
/// (LoRA's <c>PeftModel</c> for LoRA, QLoRA, DoRA, LoRA-FA and Delta-LoRA; <c>VeraModel</c>; <c>IA3Model</c>;
/// <c>BottleneckModel</c>; <c>PromptLearningModel</c>; <c>SparseFineTuning</c>), so one
/// trainer (<c>PeftGen.Training.Trainer</c>) and one fine-tuning session train them all. Layer drop is not a wrapper:
/// the wrapper of the method it accompanies reports its generator.
/// </summary>
public interface IAdaptedModel : IDisposable
{
    /// <summary>
    /// The module that trains: its parameters that require gradients are the trainable ones (checkpoints name them by
    /// their paths in it), and the trainer switches it between training and evaluation mode.
    /// </summary>
    Module TrainedModule { get; }

    /// <summary>
    /// The causal language model underneath, adapters active: it computes the loss and generates text. Null when the
    /// adapted model is not a Llama-family causal LM (a user's own module); then the trainer needs a loss function.
    /// </summary>
    LlamaForCausalLM? CausalLM { get; }

    /// <summary>
    /// The random generators the forward pass draws from (adapter dropout, layer drop), in a fixed order: checkpoints save
    /// their states in this order, and gradient checkpointing replays them.
    /// </summary>
    IReadOnlyList<Rng> RandomGenerators { get; }

    /// <summary>
    /// The optimizer groups of the trainable parameters of <see cref="TrainedModule"/>, in its parameter order: LoRA+
    /// asks the layers for the parameters it speeds up (<see cref="ILoRAPlusLayer"/>), layer-wise decay asks the model for
    /// its decoder layers by index (<see cref="LearningRateGroups"/>).
    /// </summary>
    /// <param name="loraPlusRatio">LoRA+: the learning-rate multiplier of B matrices; 0 or 1 disables.</param>
    /// <param name="layerwiseDecay">Layer-wise decay γ in (0, 1]; 1 disables.</param>
    /// <returns>The groups; together they hold every trainable parameter once.</returns>
    /// <exception cref="ArgumentException">LoRA+ is asked for without B matrices, or layer-wise decay without decoder layers.</exception>
    IReadOnlyList<ParameterGroup> ParameterGroups(float loraPlusRatio, float layerwiseDecay) =>
        LearningRateGroups.Of(TrainedModule, loraPlusRatio, layerwiseDecay);

    /// <summary>
    /// Called by each trainer built on this model, before its first step: the gradient masks and after-step hooks the
    /// method needs (sparse fine-tuning's mask and restore, Delta-LoRA's base update, which snapshots its factors now).
    /// The model owns them (a trainer does not dispose them), so <see cref="SaveAdapter"/> can use them after training.
    /// </summary>
    /// <returns>The hooks, in the order they run.</returns>
    TrainingHooks PrepareTraining();

    /// <summary>
    /// Writes what training produced to <paramref name="folder"/> in the method's file format (Hugging Face PEFT's where
    /// the method has one): the active adapter of a multi-adapter model. Files are written under temporary names and
    /// renamed into place.
    /// </summary>
    /// <param name="folder">The adapter folder, created when missing.</param>
    /// <param name="baseModelNameOrPath">The config's <c>base_model_name_or_path</c>, or null.</param>
    /// <exception cref="InvalidOperationException">Several adapters are active, so which to save is ambiguous.</exception>
    void SaveAdapter(string folder, string? baseModelNameOrPath = null);
}

/// <summary>What a trainer runs besides the optimizer for a method.</summary>
/// <param name="GradientMasks">Called once per step after backward and before clipping (sparse fine-tuning's mask).</param>
/// <param name="AfterStepHooks">Called after every applied optimizer step (Delta-LoRA's base update, sparse fine-tuning's restore).</param>
public sealed record TrainingHooks(IReadOnlyList<IGradientMask> GradientMasks, IReadOnlyList<IAfterStepHook> AfterStepHooks)
{
    /// <summary>No masks and no hooks: the method trains with the optimizer alone.</summary>
    public static TrainingHooks None { get; } = new([], []);
}
