using PeftGen.Autograd;
using PeftGen.Backends;
using PeftGen.Tensors;

namespace PeftGen.Methods.LoRA;

/// <summary>
/// LoRA-FA (Zhang et al. 2023): LoRA with A frozen at its random initialisation, so only B [out, r] trains. The update
/// B·A·x is computed as one op that keeps only u = x·Aᵀ [..., r] for backward (dB = gᵀ·u, dx = (g·B)·A): the
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

    /// <summary>
    /// B·A·x for a frozen A [r, in] and a trainable B [out, r]: x [..., in] → [..., out]. Backward keeps u = x·Aᵀ
    /// [..., r] and never reads x: dB += gᵀ·u (times the correction when enabled), dx += (g·B)·A.
    /// </summary>
    internal static Tensor Product(Tensor x, Tensor a, Tensor b, AdapterSettings settings)
    {
        if (a.RequiresGrad)
            throw new InvalidOperationException($"LoRA-FA keeps A frozen, but {a.DescribeForError()} requires gradients; LoRA-FA adapters must not unfreeze A.");
        x = x.Contiguous();
        a = a.Contiguous();
        b = b.Contiguous();
        int inF = a.Size(1), r = a.Size(0), outF = b.Size(0);
        if (x.Size(-1) != inF || b.Size(1) != r)
            throw new ArgumentException($"LoRA-FA: input {x.DescribeForError()}, A {a.DescribeForError()} and B {b.DescribeForError()} do not fit.");
        int rows = checked((int)(x.Count / inF));
        var uShape = (int[])x.ShapeArray.Clone();
        uShape[^1] = r;
        var yShape = (int[])x.ShapeArray.Clone();
        yShape[^1] = outF;
        var be = Backend.Of(x);
        var u = Tensor.Empty(uShape);                                                         // [..., r] = x·Aᵀ
        be.Gemm(false, true, rows, r, inF, 1f, x, inF, 0, a, inF, 0, 0f, u, r, 0, 1);
        var y = Tensor.Empty(yShape);                                                         // [..., out] = u·Bᵀ
        be.Gemm(false, true, rows, outF, r, 1f, u, r, 0, b, r, 0, 0f, y, outF, 0, 1);
        if (!Tape.ShouldRecord(x, b)) return y;
        Tensor? correction = null;
        if (settings.LoRAFAGradientCorrection && b.RequiresGrad)
            correction = Tensor.FromArray(CorrectionMatrix(a, settings.Scaling), r, r);       // [r, r], step-scoped
        // The closure holds u, the parameters and x only as the place to deposit dx; x's values are never read.
        var input = x;
        Tape.Record(y, () =>
        {
            var g = y.Grad!;                                                                  // [rows, out]
            if (b.RequiresGrad)
            {
                var gb = Grads.Buffer(b, out bool acc);                                       // [out, r]
                if (correction == null)
                    be.Gemm(true, false, outF, r, rows, 1f, g, outF, 0, u, r, 0, acc ? 1f : 0f, gb, r, 0, 1);
                else
                {
                    using var raw = Tensor.Empty([outF, r]);                                  // [out, r] = gᵀ·u
                    be.Gemm(true, false, outF, r, rows, 1f, g, outF, 0, u, r, 0, 0f, raw, r, 0, 1);
                    be.Gemm(false, false, outF, r, r, 1f, raw, r, 0, correction, r, 0, acc ? 1f : 0f, gb, r, 0, 1);
                }
            }
            if (input.RequiresGrad)
            {
                using var gu = Tensor.Empty([rows, r]);                                       // [rows, r] = g·B
                be.Gemm(false, false, rows, r, outF, 1f, g, outF, 0, b, r, 0, 0f, gu, r, 0, 1);
                var gx = Grads.Buffer(input, out bool acc);                                   // [rows, in] = (g·B)·A
                be.Gemm(false, false, rows, inF, r, 1f, gu, r, 0, a, inF, 0, acc ? 1f : 0f, gx, inF, 0, 1);
            }
        });
        return y;
    }
}
