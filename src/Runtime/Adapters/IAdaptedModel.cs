using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Optim;
using PeftGen.Tensors;

namespace PeftGen.Adapters;

/// <summary>
/// A model with a PEFT method applied, as the trainer sees it: which module trains, in which learning-rate groups, what
/// runs around each optimizer step, which random generators a checkpoint saves, how the result is saved, and the
/// causal language model that computes the loss and generates text. Every method's model wrapper implements it
/// (<see cref="PeftModel{TModel}"/> for LoRA, QLoRA, DoRA, LoRA-FA, Delta-LoRA and VeRA; <see cref="IA3Model{TModel}"/>;
/// <see cref="BottleneckModel{TModel}"/>; <see cref="PromptLearningModel"/>; <see cref="SparseFineTuning"/>), so one
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

/// <summary>
/// A layer some of whose parameters LoRA+ trains at ratio × the learning rate (Hayou et al. 2024): LoRA's B matrices.
/// The trainer asks every layer of the model for them instead of matching parameter names.
/// </summary>
public interface ILoRAPlusLayer
{
    /// <summary>The parameters LoRA+ speeds up (those that do not train are ignored).</summary>
    IEnumerable<Tensor> LoRAPlusParameters();
}

/// <summary>
/// The optimizer parameter groups of a model's trainable parameters, asked of the model rather than read from parameter
/// names: LoRA+ puts what the layers report through <see cref="ILoRAPlusLayer"/> in a group at ratio × the learning rate;
/// layer-wise decay gives decoder layer i of L the multiplier γ^(L−1−i) and the token embedding γ^L
/// (<see cref="LayerwiseLearningRate"/>), taking the layers by index from a Llama model (any other module falls back to
/// the documented path rule, <c>layers.i.</c> and <c>embed_tokens</c>).
/// </summary>
public static class LearningRateGroups
{
    /// <summary>
    /// The groups of <paramref name="model"/>'s parameters that require gradients, in its parameter order: one group
    /// without LoRA+ or decay; the rest then the LoRA+ parameters with LoRA+ alone; with decay, one group per distinct
    /// multiplier (LoRA+'s ratio times the depth factor) in the order each first appears.
    /// </summary>
    /// <param name="model">The module that trains.</param>
    /// <param name="loraPlusRatio">LoRA+: the learning-rate multiplier of B matrices; 0 or 1 disables.</param>
    /// <param name="layerwiseDecay">Layer-wise decay γ in (0, 1]; 1 disables.</param>
    /// <returns>The groups.</returns>
    /// <exception cref="ArgumentException">LoRA+ without trainable B matrices, or decay without decoder layers.</exception>
    public static IReadOnlyList<ParameterGroup> Of(Module model, float loraPlusRatio = 0f, float layerwiseDecay = 1f)
    {
        ArgumentNullException.ThrowIfNull(model);
        var parameters = model.NamedParameters().Where(p => p.Tensor.RequiresGrad).ToList();
        bool loraPlus = loraPlusRatio > 0 && loraPlusRatio != 1;
        var fast = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        if (loraPlus)
            foreach (var (_, module) in model.NamedModules())
                if (module is ILoRAPlusLayer layer) fast.UnionWith(layer.LoRAPlusParameters());
        var groups = new List<ParameterGroup>();
        var rest = parameters.Where(p => !fast.Contains(p.Tensor)).Select(p => p.Tensor).ToList();
        if (rest.Count > 0) groups.Add(new ParameterGroup(rest));
        if (loraPlus)
        {
            var b = parameters.Where(p => fast.Contains(p.Tensor)).Select(p => p.Tensor).ToList();
            if (b.Count == 0) throw new ArgumentException("LoRAPlusRatio is set but the model has no trainable lora_B matrices.", nameof(loraPlusRatio));
            groups.Add(new ParameterGroup(b, loraPlusRatio));
        }
        if (layerwiseDecay == 1f) return groups;
        // Layer-wise decay splits every group by depth; a LoRA+ B matrix gets ratio · γ^(L−1−layer).
        LayerwiseLearningRate.Validate(layerwiseDecay);
        var depth = Depth(model);
        if (depth.LayerCount < 1)
            throw new ArgumentException("Layer-wise learning-rate decay needs decoder layers, but no parameter path contains 'layers.<i>.'.", nameof(layerwiseDecay));
        return LayerwiseLearningRate.GroupByScale(parameters.Select(p =>
        {
            var (layer, embedding) = depth.Of(p.Path, p.Tensor);
            return (p.Tensor, (fast.Contains(p.Tensor) ? loraPlusRatio : 1f) * LayerwiseLearningRate.ScaleFor(layer, embedding, depth.LayerCount, layerwiseDecay));
        }));
    }

    /// <summary>Where each parameter sits in depth: its decoder layer (or none) and whether it is the token embedding.</summary>
    private static (int LayerCount, Func<string, Tensor, (int? Layer, bool Embedding)> Of) Depth(Module model)
    {
        if (model is LlamaForCausalLM llama)
        {
            var layerOf = new Dictionary<Tensor, int>(ReferenceEqualityComparer.Instance);
            for (int i = 0; i < llama.Model.Layers.Count; i++)
                foreach (var (_, tensor) in llama.Model.Layers[i].NamedParameters())
                    layerOf.TryAdd(tensor, i);
            var embedding = new HashSet<Tensor>(llama.Model.EmbedTokens.NamedParameters().Select(p => p.Tensor), ReferenceEqualityComparer.Instance);
            return (llama.Model.Layers.Count, (_, tensor) => (layerOf.TryGetValue(tensor, out int i) ? i : null, embedding.Contains(tensor)));
        }
        return (LayerwiseLearningRate.CountLayers(model.NamedParameters().Select(p => p.Path)),
            (path, _) => (LayerwiseLearningRate.LayerIndex(path), LayerwiseLearningRate.IsEmbedding(path)));
    }
}

/// <summary>What the method wrappers share in implementing <see cref="IAdaptedModel"/>.</summary>
internal static class AdaptedModel
{
    /// <summary>
    /// <paramref name="own"/> followed by the generator of the layer drop installed on <paramref name="model"/> (when it is
    /// a Llama with layer drop and the generator is not already among them): the order checkpoints save them in.
    /// </summary>
    public static IReadOnlyList<Rng> Generators(Module model, params Rng[] own)
    {
        if (model is LlamaForCausalLM { Model.LayerDrop: { } drop } && !own.Any(r => ReferenceEquals(r, drop.Rng))) return [.. own, drop.Rng];
        return own;
    }

    /// <summary>The one active adapter, which <see cref="IAdaptedModel.SaveAdapter"/> saves.</summary>
    public static string SingleActive(IReadOnlyList<string> active, string method) => active.Count switch
    {
        1 => active[0],
        0 => throw new InvalidOperationException($"No {method} adapter is active: activate the adapter to save with SetAdapter."),
        _ => throw new InvalidOperationException(
            $"Adapters {string.Join(", ", active)} are all active: SaveAdapter saves one. Activate one with SetAdapter, or save each with its file format's Save."),
    };
}
