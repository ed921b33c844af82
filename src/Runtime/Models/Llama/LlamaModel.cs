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
    public Embedding EmbedTokens { get; }

    /// <summary>The decoder layers.</summary>
    public ModuleList<LlamaDecoderLayer> Layers { get; }

    /// <summary>Final norm.</summary>
    public RMSNorm Norm { get; }

    /// <summary>Hidden states [b, t, hidden] of token ids laid out [b, t].</summary>
    public Tensor Forward(ReadOnlySpan<int> ids, int batch, int time, KvCache? cache = null)
    {
        var x = EmbedTokens.Forward(ids, batch, time);                                     // [b, t, hidden]
        foreach (var layer in Layers) x = layer.Forward(x, cache);
        cache?.Advance(time);
        return Norm.Forward(x);
    }
}
