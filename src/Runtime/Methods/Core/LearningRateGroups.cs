using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Optim;
using PeftGen.Tensors;

namespace PeftGen.Methods;

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
