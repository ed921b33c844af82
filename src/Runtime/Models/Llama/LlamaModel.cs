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

    /// <summary>
    /// Positions put before the real tokens of every forward pass, as embeddings or as per-layer keys/values (see
    /// <see cref="IVirtualTokens"/>). Null runs the plain model.
    /// </summary>
    public IVirtualTokens? VirtualTokens { get; set; }

    /// <summary>
    /// Decides which decoder layers a training forward pass without a cache skips (see <see cref="ILayerSkip"/>). Null runs
    /// every layer.
    /// </summary>
    public ILayerSkip? LayerSkip { get; set; }

    /// <summary>Hidden states [b, t, hidden] of token ids laid out [b, t] (the real tokens only, under <see cref="VirtualTokens"/>).</summary>
    public Tensor Forward(ReadOnlySpan<int> ids, int batch, int time, KvCache? cache = null)
    {
        var x = EmbedTokens.Forward(ids, batch, time);                                     // [b, t, hidden]
        // The n virtual positions come first; with a cache they are written once, into the empty cache.
        var virtualTokens = cache == null || cache.Length == 0 ? VirtualTokens : null;
        var embeddings = virtualTokens?.Embeddings(batch);                                 // [b, n, hidden] or null
        if (embeddings != null) x = Ops.Concat([embeddings, x], 1);                        // [b, n + t, hidden]
        var prefixes = virtualTokens?.KeyValues(batch);                                    // per layer [b, n, kvHeads, headDim]
        if (prefixes != null && cache != null)
        {
            for (int i = 0; i < prefixes.Count; i++) cache.Append(i, prefixes[i].Keys, prefixes[i].Values);
            cache.Advance(prefixes[0].Keys.Size(1));
            prefixes = null;
        }
        bool checkpoint = _checkpointRngs != null && cache == null && IsTraining;
        // A checkpointed layer is recomputed from its input alone, without its prefix (PEFT refuses the combination too).
        if (checkpoint && prefixes != null)
            throw new InvalidOperationException("Virtual tokens given as key/value prefixes do not work with gradient checkpointing (as in PEFT); call DisableGradientCheckpointing() first.");
        var skip = cache == null && IsTraining ? LayerSkip : null;
        for (int i = 0; i < Layers.Count; i++)
        {
            if (skip != null && skip.ShouldSkip(i)) continue;                              // skipped: x passes on unchanged
            var layer = Layers[i];
            x = checkpoint ? Ops.Checkpoint(h => layer.Forward(h), x, _checkpointRngs) : layer.Forward(x, cache, prefixes?[i]);
        }
        cache?.Advance(x.Size(1));
        if (embeddings != null) x = Ops.Slice(x, 1, embeddings.Size(1), time);            // [b, t, hidden]: the real tokens
        return Norm.Forward(x);
    }
}
