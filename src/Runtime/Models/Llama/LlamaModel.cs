using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Models.Llama;

/// <summary>The decoder stack ("model"): embed_tokens, layers, norm.</summary>
public sealed class LlamaModel : Module
{
    /// <summary>Creates the stack.</summary>
    public LlamaModel(LlamaConfig config, Random? random)
    {
        ArgumentNullException.ThrowIfNull(config);
        EmbedTokens = RegisterModule("embed_tokens", new Embedding(config.VocabSize, config.HiddenSize, random));
        Layers = RegisterModule("layers", new ModuleList<LlamaDecoderLayer>(
            Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(config, i, random))));
        Norm = RegisterModule("norm", new RMSNorm(config.HiddenSize, config.RmsNormEps));
    }

    /// <summary>Token embedding [vocab, hidden].</summary>
    [ModuleName("embed_tokens")]
    public Embedding EmbedTokens { get; }

    /// <summary>The decoder layers.</summary>
    [ModuleName("layers")]
    public ModuleList<LlamaDecoderLayer> Layers { get; }

    /// <summary>Final norm.</summary>
    [ModuleName("norm")]
    public RMSNorm Norm { get; }

    /// <summary>
    /// Recompute each decoder layer's activations in backward instead of storing them (memory ∝ layers · b · t ·
    /// hidden instead of the full activation set). <paramref name="replayedRngs"/> are the generators used inside the
    /// layers (adapter dropout), rewound for the recomputation.
    /// </summary>
    public void EnableGradientCheckpointing(params Rng[] replayedRngs)
    {
        ArgumentNullException.ThrowIfNull(replayedRngs);
        _checkpointRngs = replayedRngs;
    }

    /// <summary>Stores activations again (the default).</summary>
    public void DisableGradientCheckpointing() => _checkpointRngs = null;

    /// <summary>True when decoder layers are checkpointed.</summary>
    public bool GradientCheckpointing => _checkpointRngs != null;

    private Rng[]? _checkpointRngs;

    /// <summary>Hidden states [b, t, hidden] of token ids laid out [b, t].</summary>
    public Tensor Forward(ReadOnlySpan<int> ids, int batch, int time, KvCache? cache = null)
    {
        var x = EmbedTokens.Forward(ids, batch, time);                                     // [b, t, hidden]
        foreach (var layer in Layers)
            x = _checkpointRngs != null && cache == null && IsTraining
                ? Ops.Checkpoint(h => layer.Forward(h), x, _checkpointRngs)
                : layer.Forward(x, cache);
        cache?.Advance(time);
        return Norm.Forward(x);
    }
}
