using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Models.Llama;

/// <summary>The SwiGLU feed-forward block ("mlp"): down_proj(silu(gate_proj(x)) ∘ up_proj(x)).</summary>
public sealed class LlamaMlp : Module<Tensor, Tensor>
{
    /// <summary>Creates the three projections.</summary>
    public LlamaMlp(LlamaConfig config, Random? random)
    {
        ArgumentNullException.ThrowIfNull(config);
        GateProj = RegisterModule("gate_proj", new Linear(config.HiddenSize, config.IntermediateSize, random: random));
        UpProj = RegisterModule("up_proj", new Linear(config.HiddenSize, config.IntermediateSize, random: random));
        DownProj = RegisterModule("down_proj", new Linear(config.IntermediateSize, config.HiddenSize, random: random));
    }

    /// <summary>Gate projection [intermediate, hidden].</summary>
    [ModuleName("gate_proj")]
    public LinearBase GateProj { get; private set; }

    /// <summary>Up projection [intermediate, hidden].</summary>
    [ModuleName("up_proj")]
    public LinearBase UpProj { get; private set; }

    /// <summary>Down projection [hidden, intermediate].</summary>
    [ModuleName("down_proj")]
    public LinearBase DownProj { get; private set; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input)
    {
        var h = Ops.SwiGlu(GateProj.Forward(input), UpProj.Forward(input));               // [b, t, intermediate]
        var y = DownProj.Forward(h);                                                       // [b, t, hidden]
        // SwiGLU's backward reads gate and up, not h: when down_proj does not read it either, drop it now.
        LlamaDecoderLayer.ReleaseIfUnread(h, DownProj);
        return y;
    }

    /// <inheritdoc />
    protected override void OnModuleReplaced(string name, Module replacement)
    {
        if (replacement is not LinearBase linear)
            throw new ArgumentException($"{name} must stay a linear layer (LinearBase); got {replacement.GetType().Name}.", nameof(replacement));
        switch (name)
        {
            case "gate_proj": GateProj = linear; break;
            case "up_proj": UpProj = linear; break;
            case "down_proj": DownProj = linear; break;
            default: base.OnModuleReplaced(name, replacement); break;
        }
    }
}
