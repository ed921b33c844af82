using PeftGen.Tensors;

namespace PeftGen.Nn;

/// <summary>Root-mean-square layer norm with a learned per-channel gain ("weight", initialised to 1).</summary>
public sealed class RMSNorm : Module<Tensor, Tensor>
{
    /// <summary>Creates a norm over <paramref name="dim"/> channels.</summary>
    public RMSNorm(int dim, float eps)
    {
        Eps = eps;
        Weight = RegisterParameter("weight", Tensor.Full([dim], 1f));
    }

    /// <summary>The ε added to the mean square.</summary>
    public float Eps { get; }

    /// <summary>The gain, [dim].</summary>
    public Tensor Weight { get; }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input) => Ops.RmsNorm(input, Weight, Eps); // [..., dim]
}
