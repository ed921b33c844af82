using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Models.Llama;

/// <summary>One pre-norm transformer block: x + attn(norm(x)), then h + mlp(norm(h)).</summary>
public sealed class LlamaDecoderLayer : Module
{
    /// <summary>Creates layer <paramref name="layerIndex"/>.</summary>
    public LlamaDecoderLayer(LlamaConfig config, int layerIndex, Random? random)
    {
        ArgumentNullException.ThrowIfNull(config);
        InputLayerNorm = RegisterModule("input_layernorm", new RMSNorm(config.HiddenSize, config.RmsNormEps));
        SelfAttn = RegisterModule("self_attn", new LlamaAttention(config, layerIndex, random));
        PostAttentionLayerNorm = RegisterModule("post_attention_layernorm", new RMSNorm(config.HiddenSize, config.RmsNormEps));
        Mlp = RegisterModule("mlp", new LlamaMlp(config, random));
    }

    /// <summary>Norm before attention.</summary>
    [ModuleName("input_layernorm")]
    public RMSNorm InputLayerNorm { get; }

    /// <summary>The attention block.</summary>
    [ModuleName("self_attn")]
    public LlamaAttention SelfAttn { get; }

    /// <summary>Norm before the MLP.</summary>
    [ModuleName("post_attention_layernorm")]
    public RMSNorm PostAttentionLayerNorm { get; }

    /// <summary>The feed-forward block.</summary>
    [ModuleName("mlp")]
    public LlamaMlp Mlp { get; }

    /// <summary>Transforms x [b, t, hidden]; <paramref name="prefix"/> is keys/values its attention sees before the input's, if any.</summary>
    public Tensor Forward(Tensor x, KvCache? cache = null, KeyValuePrefix? prefix = null)
    {
        var normed = InputLayerNorm.Forward(x);                                            // [b, t, hidden]
        var attention = SelfAttn.Forward(normed, cache, prefix);                           // [b, t, hidden]
        // RMSNorm's backward reads its input, not its output: when q/k/v do not read it either, drop it now.
        ReleaseIfUnread(normed, SelfAttn.QProj, SelfAttn.KProj, SelfAttn.VProj);
        var h = x + Adapt(AttentionAdapter, attention);                                    // [b, t, hidden]
        var normedH = PostAttentionLayerNorm.Forward(h);                                   // [b, t, hidden]
        var mlp = Mlp.Forward(normedH);                                                    // [b, t, hidden]
        ReleaseIfUnread(normedH, Mlp.GateProj, Mlp.UpProj);
        return h + Adapt(MlpAdapter, mlp);                                                 // [b, t, hidden]
    }

    /// <summary>Test hook: keeps every activation to the end of the step on this thread (the reference for the release).</summary>
    [ThreadStatic] internal static bool t_keepActivations;

    /// <summary>Drops <paramref name="activation"/>'s values when none of the layers it fed reads them in backward.</summary>
    internal static void ReleaseIfUnread(Tensor activation, params LinearBase[] consumers)
    {
        if (t_keepActivations) return;
        foreach (var consumer in consumers)
            if (consumer.KeepsInputForBackward) return;
        activation.ReleaseValues();
    }

    /// <summary>
    /// Sublayer-output hook: a module applied to the attention block's output before the residual add ("attn_adapter"),
    /// or null. A registered child, so its parameters train, save and load with the model's.
    /// </summary>
    [ModuleName("attn_adapter")]
    [AdapterSlot]
    public Module<Tensor, Tensor>? AttentionAdapter { get; private set; }

    /// <summary>Sublayer-output hook on the MLP's output before the residual add ("mlp_adapter"), as <see cref="AttentionAdapter"/>.</summary>
    [ModuleName("mlp_adapter")]
    [AdapterSlot]
    public Module<Tensor, Tensor>? MlpAdapter { get; private set; }

    /// <summary>
    /// Inserts <paramref name="adapter"/> on the attention output, replacing any previous one; null removes it. Returns the module taken out (the caller owns it), or null.
    /// </summary>
    public Module<Tensor, Tensor>? SetAttentionAdapter(Module<Tensor, Tensor>? adapter)
    {
        var previous = Swap("attn_adapter", AttentionAdapter, adapter);
        AttentionAdapter = adapter;
        return previous;
    }

    /// <summary>Inserts <paramref name="adapter"/> on the MLP output, as <see cref="SetAttentionAdapter"/> does on attention.</summary>
    public Module<Tensor, Tensor>? SetMlpAdapter(Module<Tensor, Tensor>? adapter)
    {
        var previous = Swap("mlp_adapter", MlpAdapter, adapter);
        MlpAdapter = adapter;
        return previous;
    }

    private Module<Tensor, Tensor>? Swap(string name, Module<Tensor, Tensor>? current, Module<Tensor, Tensor>? replacement)
    {
        if (current != null) UnregisterModule(name);
        if (replacement != null) RegisterModule(name, replacement);
        return current;
    }

    private static Tensor Adapt(Module<Tensor, Tensor>? adapter, Tensor y) => adapter == null ? y : adapter.Forward(y); // [b, t, hidden]
}
