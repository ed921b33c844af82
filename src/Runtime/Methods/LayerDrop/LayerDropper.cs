using PeftGen.Models;
using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.Methods.LayerDrop;

/// <summary>
/// Stochastic skipping of decoder layers while training (LayerDrop / stochastic depth), installed as the decoder stack's
/// <see cref="LlamaModel.LayerSkip"/> hook. Before each layer of a training forward pass (no KV cache) one number is
/// drawn from <see cref="Rng"/>; the layer is skipped when it falls
/// below the layer's probability, and then its input passes on unchanged, nothing of the layer is recorded on the
/// tape and its parameters get no gradient. Kept layers are not rescaled. Evaluation mode and generation run every
/// layer. Put <see cref="Rng"/> in the trainer's generators so checkpoints resume with the same decisions.
/// </summary>
public sealed class LayerDropper : ILayerSkip, IRandomHook
{
    private readonly float[] _probabilities;

    /// <summary>Drops layer l with probability <paramref name="probabilities"/>[l] (each in [0, 1]; 1 always skips that layer).</summary>
    /// <exception cref="ArgumentException">A probability lies outside [0, 1].</exception>
    public LayerDropper(IReadOnlyList<float> probabilities, Rng rng)
    {
        ArgumentNullException.ThrowIfNull(probabilities);
        Rng = rng ?? throw new ArgumentNullException(nameof(rng));
        for (int l = 0; l < probabilities.Count; l++)
            if (!(probabilities[l] >= 0f && probabilities[l] <= 1f))
                throw new ArgumentException($"The skip probability of layer {l} must be in [0, 1] (got {probabilities[l]}).", nameof(probabilities));
        _probabilities = probabilities.ToArray();
    }

    /// <summary>The generator of skip decisions (save it in checkpoints: pass it to the trainer).</summary>
    public Rng Rng { get; }

    /// <summary>The skip probability of each layer.</summary>
    public IReadOnlyList<float> Probabilities => _probabilities;

    /// <summary>Layers skipped in the most recent training forward pass (for inspection and tests).</summary>
    public IReadOnlyList<int> LastSkipped => _lastSkipped;

    private List<int> _lastSkipped = new();

    /// <summary>
    /// Turns layer drop on for <paramref name="model"/>'s decoder stack, drawing from <paramref name="rng"/> (for
    /// example an adapter model's <c>DropoutRng</c>, already saved by the trainer) or, when null, from a new
    /// generator seeded with <see cref="LayerDropConfig.Seed"/>. Returns the installed instance.
    /// </summary>
    /// <exception cref="ArgumentException">A setting is invalid.</exception>
    public static LayerDropper Apply(LlamaForCausalLM model, LayerDropConfig config, Rng? rng = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        var drop = new LayerDropper(config.ProbabilitiesFor(model.Model.Layers.Count), rng ?? new Rng((ulong)(uint)config.Seed ^ 0x1A7E_D809UL));
        model.Model.LayerSkip = drop;
        return drop;
    }

    /// <summary>Draws whether layer <paramref name="layer"/> is skipped in this forward pass.</summary>
    /// <exception cref="InvalidOperationException">The model has more layers than this instance has probabilities.</exception>
    public bool ShouldSkip(int layer)
    {
        if (layer >= _probabilities.Length)
            throw new InvalidOperationException($"Layer drop knows {_probabilities.Length} layers; the model asked about layer {layer}. Create it for this model.");
        if (layer == 0) _lastSkipped = new List<int>();
        bool skip = Rng.NextSingle() < _probabilities[layer];
        if (skip) _lastSkipped.Add(layer);
        return skip;
    }
}

/// <summary>The layer drop installed in a Llama decoder stack, seen from the model.</summary>
public static class LayerDropperExtensions
{
    extension(LlamaModel model)
    {
        /// <summary>
        /// The <see cref="LayerDropper"/> installed as this stack's <see cref="LlamaModel.LayerSkip"/> hook, or null; setting it
        /// installs one (null removes the hook).
        /// </summary>
        public LayerDropper? LayerDrop
        {
            get => model.LayerSkip as LayerDropper;
            set => model.LayerSkip = value;
        }
    }
}
