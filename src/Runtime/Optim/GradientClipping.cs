using PeftGen.Backends;
using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>Global-norm gradient clipping (PyTorch's <c>clip_grad_norm_</c>).</summary>
public static class GradientClipping
{
    /// <summary>
    /// Scales all gradients so their joint L2 norm is at most <paramref name="maxNorm"/>, and returns the norm
    /// before clipping (NaN or ∞ when a gradient is not finite; gradients are then left unchanged).
    /// </summary>
    public static float ClipGlobalNorm(IEnumerable<Tensor> parameters, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(maxNorm > 0)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "must be > 0");
        var grads = parameters.Select(p => p.Grad).OfType<Tensor>().ToList();
        double squares = 0;
        foreach (var g in grads) squares += Backend.Of(g).SumSquares(g);
        float norm = (float)Math.Sqrt(squares);
        if (!float.IsFinite(norm)) return norm;
        if (norm > maxNorm)
        {
            float scale = maxNorm / (norm + 1e-6f);
            foreach (var g in grads) Backend.Of(g).Scale(g, scale, g, accumulate: false);
        }
        return norm;
    }
}
