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

    /// <summary>Transforms x [b, t, hidden].</summary>
    public Tensor Forward(Tensor x, KvCache? cache = null)
    {
        var h = x + SelfAttn.Forward(InputLayerNorm.Forward(x), cache);                    // [b, t, hidden]
        return h + Mlp.Forward(PostAttentionLayerNorm.Forward(h));                         // [b, t, hidden]
    }
}
