using PeftGen.Autograd;
using PeftGen.Backends;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

/// <summary>
/// LoRA-FA (Zhang et al. 2023): LoRA with A frozen at its random initialisation, so only B [out, r] trains. The update
/// B·A·x is computed by <see cref="LowRankUpdate.AddInto"/>, which with A frozen keeps only u = x·Aᵀ [..., r] for backward (dB = gᵀ·u, dx = (g·B)·A): the
/// layer input x [..., in] is not needed, which is where the activation memory goes in plain LoRA (dA = (g·B)ᵀ·x).
/// Enable it with <see cref="LoRAConfig.UseLoRAFA"/>; the adapter saves as an ordinary LoRA adapter.
/// </summary>
public static class LoRAFA
{
    /// <summary>The ridge ε of the gradient correction (A·Aᵀ + ε·I)⁻¹.</summary>
    internal const double CorrectionEpsilon = 1e-8;

    /// <summary>
    /// Activation bytes an adapter path keeps for backward per input row of a float32 layer: plain LoRA keeps x and
    /// x·Aᵀ (in + r floats), LoRA-FA keeps x·Aᵀ only (r floats).
    /// </summary>
    public static long BytesKeptPerRow(int inFeatures, int rank, bool loraFA) => sizeof(float) * (long)(loraFA ? rank : inFeatures + rank);

    /// <summary>
    /// The correction matrix C = (1/s²)·(A·Aᵀ + ε·I)⁻¹ [r, r] of a frozen A [r, in]: the corrected gradient is g_B·C,
    /// the B-step whose s·ΔB·A best matches a full-weight gradient step (least squares).
    /// </summary>
    internal static float[] CorrectionMatrix(Tensor a, float scaling)
    {
        ArgumentNullException.ThrowIfNull(a);
        if (a.Rank != 2) throw new ArgumentException($"A must be [r, in]; got {a.DescribeForError()}.", nameof(a));
        int r = a.Size(0), n = a.Size(1);
        var av = a.Contiguous().AsSpan();
        var m = new double[r, 2 * r];                                                         // [A·Aᵀ + εI | I]
        for (int i = 0; i < r; i++)
        {
            for (int j = 0; j <= i; j++)
            {
                double dot = 0;
                for (int k = 0; k < n; k++) dot += (double)av[i * n + k] * av[j * n + k];
                m[i, j] = m[j, i] = dot;
            }
            m[i, i] += CorrectionEpsilon;
            m[i, r + i] = 1;
        }
        // Gauss-Jordan with partial pivoting, in double (A·Aᵀ can be ill-conditioned when r approaches in).
        for (int col = 0; col < r; col++)
        {
            int pivot = col;
            for (int row = col + 1; row < r; row++)
                if (Math.Abs(m[row, col]) > Math.Abs(m[pivot, col])) pivot = row;
            if (m[pivot, col] == 0) throw new InvalidOperationException("A·Aᵀ + εI is singular: A is zero. LoRA-FA needs a random (non-zero) A.");
            if (pivot != col)
                for (int k = 0; k < 2 * r; k++) (m[col, k], m[pivot, k]) = (m[pivot, k], m[col, k]);
            double inv = 1 / m[col, col];
            for (int k = 0; k < 2 * r; k++) m[col, k] *= inv;
            for (int row = 0; row < r; row++)
            {
                if (row == col || m[row, col] == 0) continue;
                double f = m[row, col];
                for (int k = 0; k < 2 * r; k++) m[row, k] -= f * m[col, k];
            }
        }
        double scale = 1.0 / ((double)scaling * scaling);
        var c = new float[r * r];
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) c[i * r + j] = (float)(scale * m[i, r + j]);
        return c;
    }

    /// <summary>
    /// What <see cref="LowRankUpdate.AddInto"/> needs for an adapter with these settings: null for plain LoRA; for LoRA-FA
    /// the gradient correction C [r, r] when it is enabled and B is being trained, else null (A must then be frozen).
    /// </summary>
    internal static float[]? CorrectionFor(Tensor a, Tensor b, AdapterSettings settings)
    {
        if (!settings.UseLoRAFA) return null;
        if (a.RequiresGrad)
            throw new InvalidOperationException($"LoRA-FA keeps A frozen, but {a.DescribeForError()} requires gradients; LoRA-FA adapters must not unfreeze A.");
        return settings.LoRAFAGradientCorrection && Tape.ShouldRecord(b) ? CorrectionMatrix(a, settings.Scaling) : null;
    }
}
