using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Models.Llama;

/// <summary>Grouped-query self-attention with rotary embeddings ("self_attn": q_proj, k_proj, v_proj, o_proj).</summary>
public sealed class LlamaAttention : Module
{
    private readonly LlamaConfig _config;
    private readonly int _layerIndex;

    /// <summary>Creates the projections of layer <paramref name="layerIndex"/>.</summary>
    public LlamaAttention(LlamaConfig config, int layerIndex, Random? random)
    {
        ArgumentNullException.ThrowIfNull(config);
        _config = config;
        _layerIndex = layerIndex;
        int c = config.HiddenSize, q = config.NumAttentionHeads * config.HeadDim, kv = config.KeyValueHeads * config.HeadDim;
        QProj = RegisterModule("q_proj", new Linear(c, q, random: random));
        KProj = RegisterModule("k_proj", new Linear(c, kv, random: random));
        VProj = RegisterModule("v_proj", new Linear(c, kv, random: random));
        OProj = RegisterModule("o_proj", new Linear(q, c, random: random));
    }

    /// <summary>Query projection [heads·headDim, hidden].</summary>
    [ModuleName("q_proj")]
    public LinearBase QProj { get; private set; }

    /// <summary>Key projection [kvHeads·headDim, hidden].</summary>
    [ModuleName("k_proj")]
    public LinearBase KProj { get; private set; }

    /// <summary>Value projection [kvHeads·headDim, hidden].</summary>
    [ModuleName("v_proj")]
    public LinearBase VProj { get; private set; }

    /// <summary>Output projection [hidden, heads·headDim].</summary>
    [ModuleName("o_proj")]
    public LinearBase OProj { get; private set; }

    /// <summary>
    /// Attends x [b, t, hidden] to itself causally; with a cache, also to the cached past; with a
    /// <paramref name="prefix"/> (no cache), also to its n keys/values, the input then sitting at positions n..n+t−1.
    /// </summary>
    public Tensor Forward(Tensor x, KvCache? cache = null, KeyValuePrefix? prefix = null)
    {
        if (prefix != null && cache != null)
            throw new ArgumentException("A key/value prefix goes into the KV cache once, before decoding; pass either the prefix or the cache.", nameof(prefix));
        int b = x.Size(0), t = x.Size(1);
        int hq = _config.NumAttentionHeads, hkv = _config.KeyValueHeads, d = _config.HeadDim;
        int offset = cache?.Length ?? prefix?.Keys.Size(1) ?? 0;
        var q = QProj.Forward(x).Reshape(b, t, hq, d);                                     // [b, t, hq, d]
        var k = KProj.Forward(x).Reshape(b, t, hkv, d);                                    // [b, t, hkv, d]
        var v = VProj.Forward(x).Reshape(b, t, hkv, d);                                    // [b, t, hkv, d]
        q = Ops.Rope(q, offset, _config.RopeTheta, _config.RopeInterleaved);
        k = Ops.Rope(k, offset, _config.RopeTheta, _config.RopeInterleaved);
        Tensor y;                                                                          // [b, t, hq, d]
        if (prefix != null)
            y = Ops.CausalAttentionWithPrefix(q, Ops.Concat([prefix.Keys, k], 1), Ops.Concat([prefix.Values, v], 1)); // keys [b, n + t, hkv, d]
        else if (cache == null) y = Ops.CausalAttention(q, k, v);
        else
        {
            var (keys, values) = cache.Append(_layerIndex, k, v);
            y = Ops.AttentionWithCache(q, keys, values, offset + t);
        }
        return OProj.Forward(y.Reshape(b, t, hq * d));                                     // [b, t, hidden]
    }

    /// <inheritdoc />
    protected override void OnModuleReplaced(string name, Module replacement)
    {
        if (replacement is not LinearBase linear)
            throw new ArgumentException($"{name} must stay a linear layer (LinearBase); got {replacement.GetType().Name}.", nameof(replacement));
        switch (name)
        {
            case "q_proj": QProj = linear; break;
            case "k_proj": KProj = linear; break;
            case "v_proj": VProj = linear; break;
            case "o_proj": OProj = linear; break;
            default: base.OnModuleReplaced(name, replacement); break;
        }
    }
}
