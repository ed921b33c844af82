using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using PeftGen.Backends.Cpu.Kernels;
using PeftGen.Tensors;

namespace PeftGen.Backends.Cpu;

/// <summary>The host backend: managed SIMD kernels on pinned memory.</summary>
internal sealed unsafe class CpuBackend : IBackend
{
    public static CpuBackend Instance { get; } = new();

    private CpuBackend() { }

    public void CopyStrided(Tensor src, Tensor dst, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int rank = src.Rank;
        var shape = src.ShapeArray;
        if (src.Count == 0) return;
        if (src.IsContiguous && dst.IsContiguous)
        {
            var s = new ReadOnlySpan<float>(src.Data, checked((int)src.Count));
            var d = new Span<float>(dst.Data, checked((int)dst.Count));
            if (accumulate) TensorPrimitives.Add(d, s, d); else s.CopyTo(d);
            return;
        }
        // Walk every index but the innermost; the inner loop is a strided (or dense) row.
        int inner = rank == 0 ? 1 : shape[rank - 1];
        long innerSrc = rank == 0 ? 1 : src.StridesArray[rank - 1];
        long innerDst = rank == 0 ? 1 : dst.StridesArray[rank - 1];
        long outer = src.Count / inner;
        float* sBase = src.Data, dBase = dst.Data;
        var srcStrides = src.StridesArray;
        var dstStrides = dst.StridesArray;
        CpuParallel.ForRange((int)outer, Math.Max(1, 16384 / Math.Max(1, inner)), (start, end) =>
        {
            for (long row = start; row < end; row++)
            {
                long so = 0, dOff = 0, rem = row;
                for (int dim = rank - 2; dim >= 0; dim--)
                {
                    long idx = rem % shape[dim];
                    rem /= shape[dim];
                    so += idx * srcStrides[dim];
                    dOff += idx * dstStrides[dim];
                }
                float* s = sBase + so, d = dBase + dOff;
                if (innerSrc == 1 && innerDst == 1)
                {
                    var sr = new ReadOnlySpan<float>(s, inner);
                    var dr = new Span<float>(d, inner);
                    if (accumulate) TensorPrimitives.Add(dr, sr, dr); else sr.CopyTo(dr);
                }
                else if (accumulate)
                    for (int i = 0; i < inner; i++) d[i * innerDst] += s[i * innerSrc];
                else
                    for (int i = 0; i < inner; i++) d[i * innerDst] = s[i * innerSrc];
            }
        });
    }

    public void Fill(Tensor dst, float value)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        Span(dst).Fill(value);
    }

    public void AddScaled(Tensor a, float alpha, Tensor b, float beta, Tensor y)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int period = checked((int)b.Count);
        CpuParallel.ForRange(checked((int)(a.Count / period)), Math.Max(1, 32768 / period), (start, end) =>
        {
            var bRow = new ReadOnlySpan<float>(b.Data, period);
            for (int r = start; r < end; r++)
            {
                var aRow = new ReadOnlySpan<float>(a.Data + (long)r * period, period);
                var yRow = new Span<float>(y.Data + (long)r * period, period);
                if (alpha == 1f && beta == 1f) TensorPrimitives.Add(aRow, bRow, yRow);
                else if (alpha == 1f) TensorPrimitives.MultiplyAdd(bRow, beta, aRow, yRow);
                else
                {
                    TensorPrimitives.Multiply(aRow, alpha, yRow);
                    TensorPrimitives.MultiplyAdd(bRow, beta, yRow, yRow);
                }
            }
        });
    }

    public void Mul(Tensor a, Tensor b, Tensor y, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        if (accumulate) TensorPrimitives.MultiplyAdd(Span(a), Span(b), Span(y), Span(y));
        else TensorPrimitives.Multiply(Span(a), Span(b), Span(y));
    }

    public void MulRows(Tensor a, Tensor v, Tensor y, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int c = checked((int)v.Count);
        CpuParallel.ForRange(checked((int)(a.Count / c)), Math.Max(1, 32768 / c), (start, end) =>
        {
            var vRow = new ReadOnlySpan<float>(v.Data, c);
            for (long r = start; r < end; r++)
            {
                var aRow = new ReadOnlySpan<float>(a.Data + r * c, c);
                var yRow = new Span<float>(y.Data + r * c, c);
                if (accumulate) TensorPrimitives.MultiplyAdd(aRow, vRow, yRow, yRow);
                else TensorPrimitives.Multiply(aRow, vRow, yRow);
            }
        });
    }

    public void SumRowsOfProduct(Tensor g, Tensor a, Tensor dst, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int c = checked((int)dst.Count);
        long rows = g.Count / c;
        var d = Span(dst);
        if (!accumulate) d.Clear();
        for (long r = 0; r < rows; r++)
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(g.Data + r * c, c), new ReadOnlySpan<float>(a.Data + r * c, c), d, d);
    }

    public void Scale(Tensor x, float s, Tensor y, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        if (accumulate) TensorPrimitives.MultiplyAdd(Span(x), s, Span(y), Span(y));
        else TensorPrimitives.Multiply(Span(x), s, Span(y));
    }

    public void SumRows(Tensor src, Tensor dst, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int c = checked((int)dst.Count);
        long rows = src.Count / c;
        var d = Span(dst);
        if (!accumulate) d.Clear();
        for (long r = 0; r < rows; r++)
            TensorPrimitives.Add(d, new ReadOnlySpan<float>(src.Data + r * c, c), d);
    }

    public double Sum(Tensor x)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        double total = 0;
        var s = Span(x);
        const int Chunk = 4096; // float partial sums over short runs, double across them: accurate and fast
        for (int i = 0; i < s.Length; i += Chunk)
            total += TensorPrimitives.Sum(s.Slice(i, Math.Min(Chunk, s.Length - i)));
        return total;
    }

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
        Tensor a, int lda, long strideA, Tensor b, int ldb, long strideB,
        float beta, Tensor c, int ldc, long strideC, int batch)
    {
        using var timer = WorkProfiler.Time(WorkProfiler.GemmKind);
        if (batch == 1)
            Sgemm.Multiply(transA, transB, m, n, k, alpha, a.Data, lda, b.Data, ldb, beta, c.Data, ldc);
        else
            Sgemm.MultiplyBatched(transA, transB, m, n, k, alpha, a.Data, lda, strideA, b.Data, ldb, strideB,
                beta, c.Data, ldc, strideC, batch);
    }

    public void EmbeddingForward(Tensor weight, ReadOnlySpan<int> ids, Tensor y)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int c = weight.Size(1);
        float* o = y.Data;
        if (weight.DType != DType.Float32)
        {
            // A frozen 16-bit table: widen only the rows looked up.
            var w16 = (ushort*)weight.RawData;
            for (int i = 0; i < ids.Length; i++)
                Float16Conversions.Widen(new ReadOnlySpan<ushort>(w16 + (long)ids[i] * c, c), new Span<float>(o + (long)i * c, c), weight.DType);
            return;
        }
        float* w = weight.Data;
        for (int i = 0; i < ids.Length; i++)
            new ReadOnlySpan<float>(w + (long)ids[i] * c, c).CopyTo(new Span<float>(o + (long)i * c, c));
    }

    public void EmbeddingBackward(Tensor dy, ReadOnlySpan<int> ids, Tensor dweight)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int c = dweight.Size(1);
        float* g = dy.Data, dw = dweight.Data;
        for (int i = 0; i < ids.Length; i++)
        {
            var row = new Span<float>(dw + (long)ids[i] * c, c);
            TensorPrimitives.Add(row, new ReadOnlySpan<float>(g + (long)i * c, c), row);
        }
    }

    public void RmsNormForward(Tensor x, Tensor weight, Tensor y, Tensor rstd, float eps)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int c = weight.Size(0);
        RmsNormKernel.Forward(x.Data, weight.Data, y.Data, rstd.Data, checked((int)(x.Count / c)), c, eps);
    }

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dweight, bool accumulateDx)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int c = weight.Size(0);
        RmsNormKernel.Backward(dy.Data, x.Data, weight.Data, rstd.Data, dx.Data, dweight == null ? null : dweight.Data,
            checked((int)(x.Count / c)), c, accumulateDx);
    }

    public void SiluForward(Tensor x, Tensor y)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        SwiGluKernel.SiluForward(x.Data, y.Data, x.Count);
    }

    public void SiluBackward(Tensor dy, Tensor x, Tensor dx, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        SwiGluKernel.SiluBackward(dy.Data, x.Data, dx.Data, x.Count, accumulate);
    }

    public void SwiGluForward(Tensor gate, Tensor up, Tensor y)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        SwiGluKernel.Forward(gate.Data, up.Data, y.Data, gate.Count);
    }

    public void SwiGluBackward(Tensor dy, Tensor gate, Tensor up, Tensor dgate, Tensor dup, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        SwiGluKernel.Backward(dy.Data, gate.Data, up.Data, dgate.Data, dup.Data, gate.Count, accumulate);
    }

    public void Rope(Tensor x, Tensor y, int positionOffset, float theta, bool interleaved, bool inverse)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        RopeKernel.Apply(x.Data, y.Data, x.Size(0), x.Size(1), x.Size(2), x.Size(3), positionOffset, theta, interleaved, inverse);
    }

    public void AttentionForward(Tensor q, Tensor k, Tensor v, int keyLength, Tensor output, Tensor? lse, float scale)
    {
        using var timer = WorkProfiler.Time(WorkKind.Attention);
        AttentionKernel.Forward(q.Data, k.Data, v.Data, output.Data, lse == null ? null : lse.Data,
            q.Size(0), q.Size(1), keyLength, k.Size(1), q.Size(2), k.Size(2), q.Size(3), scale);
    }

    public void AttentionBackward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor output, Tensor lse,
        Tensor dq, Tensor dk, Tensor dv, float scale)
    {
        using var timer = WorkProfiler.Time(WorkKind.Attention);
        AttentionKernel.Backward(dout.Data, q.Data, k.Data, v.Data, output.Data, lse.Data, dq.Data, dk.Data, dv.Data,
            q.Size(0), q.Size(1), k.Size(1), k.Size(1), q.Size(2), k.Size(2), q.Size(3), scale);
    }

    public void SoftmaxForward(Tensor x, Tensor y)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int cols = x.Size(-1);
        SoftmaxKernel.Forward(x.Data, y.Data, checked((int)(x.Count / cols)), cols);
    }

    public void SoftmaxBackward(Tensor dy, Tensor y, Tensor dx, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int cols = y.Size(-1);
        SoftmaxKernel.Backward(dy.Data, y.Data, dx.Data, checked((int)(y.Count / cols)), cols, accumulate);
    }

    public double SumSquares(Tensor x)
    {
        using var timer = WorkProfiler.Time(WorkKind.Optimizer);
        double total = 0;
        var s = Span(x);
        const int Chunk = 4096;
        for (int i = 0; i < s.Length; i += Chunk)
        {
            var part = s.Slice(i, Math.Min(Chunk, s.Length - i));
            total += TensorPrimitives.Dot(part, part);
        }
        return total;
    }

    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
        float weightDecay, float biasCorrection1, float biasCorrection2)
    {
        using var timer = WorkProfiler.Time(WorkKind.Optimizer);
        float* p = param.Data, g = grad.Data, pm = m.Data, pv = v.Data;
        float decay = 1f - lr * weightDecay;
        float stepSize = lr / biasCorrection1;
        float invSqrtBc2 = 1f / MathF.Sqrt(biasCorrection2);
        CpuParallel.ForRange(checked((int)param.Count), 1 << 15, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                float gi = g[i];
                float mi = pm[i] = beta1 * pm[i] + (1f - beta1) * gi;
                float vi = pv[i] = beta2 * pv[i] + (1f - beta2) * gi * gi;
                // PyTorch's form: p -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps), after decoupled decay.
                p[i] = p[i] * decay - stepSize * mi / (MathF.Sqrt(vi) * invSqrtBc2 + eps);
            }
        });
    }

    public void CrossEntropyForward(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, Tensor lse)
    {
        using var timer = WorkProfiler.Time(WorkKind.CrossEntropy);
        fixed (int* t = targets)
            CrossEntropyKernel.Forward(logits.Data, t, losses.Data, lse.Data, logits.Size(0), logits.Size(1), ignoreIndex);
    }

    public void CrossEntropyBackward(Tensor logits, Tensor lse, ReadOnlySpan<int> targets, int ignoreIndex, float gradScale, Tensor dlogits)
    {
        using var timer = WorkProfiler.Time(WorkKind.CrossEntropy);
        fixed (int* t = targets)
            CrossEntropyKernel.Backward(logits.Data, lse.Data, t, dlogits.Data, logits.Size(0), logits.Size(1), ignoreIndex, gradScale);
    }

    public void CrossEntropyWithGradient(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, float gradScale)
    {
        using var timer = WorkProfiler.Time(WorkKind.CrossEntropy);
        fixed (int* t = targets)
            CrossEntropyKernel.ForwardWithGradient(logits.Data, t, losses.Data, logits.Size(0), logits.Size(1), ignoreIndex, gradScale);
    }

    public void LinearCrossEntropy(Tensor x, Tensor weight, ReadOnlySpan<int> targets, int ignoreIndex, Tensor losses, Tensor? inputGradient, float gradScale)
    {
        // One kernel for the head GEMMs and the loss: it is timed as the head's GEMM work, which it mostly is.
        using var timer = WorkProfiler.Time(WorkProfiler.GemmKind);
        var head = weight.DType == DType.Float32
            ? new HeadWeight(weight.Data, weight.Size(0), weight.Size(1))
            : new HeadWeight(Float16TileSource.Of(weight));
        fixed (int* t = targets)
            LinearCrossEntropyKernel.Run(x.Data, head, t, x.Size(0), ignoreIndex, losses.Data, inputGradient is null ? null : inputGradient.Data, gradScale);
    }

    public void Linear4BitForward(Tensor x, Quantization.QuantizedWeight weight, Tensor y)
    {
        using var timer = WorkProfiler.Time(WorkProfiler.GemmKind);
        Dequant4BitMatMulKernel.Forward(x.Data, weight, y.Data, checked((int)(x.Count / weight.Columns)));
    }

    public void Linear4BitBackwardInput(Tensor dy, Quantization.QuantizedWeight weight, Tensor dx, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkProfiler.GemmKind);
        Dequant4BitMatMulKernel.BackwardInput(dy.Data, weight, dx.Data, checked((int)(dx.Count / weight.Columns)), accumulate);
    }

    public void Linear16Forward(Tensor x, Tensor weight16, Tensor y)
    {
        using var timer = WorkProfiler.Time(WorkProfiler.GemmKind);
        TiledWeightMatMulKernel.Forward(x.Data, Float16TileSource.Of(weight16), y.Data, checked((int)(x.Count / weight16.Size(1))));
    }

    public void Linear16BackwardInput(Tensor dy, Tensor weight16, Tensor dx, bool accumulate)
    {
        using var timer = WorkProfiler.Time(WorkProfiler.GemmKind);
        TiledWeightMatMulKernel.BackwardInput(dy.Data, Float16TileSource.Of(weight16), dx.Data, checked((int)(dx.Count / weight16.Size(1))), accumulate);
    }

    public void ConvertDType(Tensor src, Tensor dst)
    {
        using var timer = WorkProfiler.Time(WorkKind.NormsAndElementwise);
        int n = checked((int)src.Count);
        byte* s = src.RawData, d = dst.RawData;
        DType from = src.DType, to = dst.DType;
        if (from == to)
        {
            long bytes = src.Count * from.ElementSize();
            Buffer.MemoryCopy(s, d, bytes, bytes);
        }
        else if (from == DType.Float32)
            CpuParallel.ForRange(n, 1 << 16, (a, b) =>
                Float16Conversions.Narrow(new ReadOnlySpan<float>((float*)s + a, b - a), new Span<ushort>((ushort*)d + a, b - a), to));
        else if (to == DType.Float32)
            CpuParallel.ForRange(n, 1 << 16, (a, b) =>
                Float16Conversions.Widen(new ReadOnlySpan<ushort>((ushort*)s + a, b - a), new Span<float>((float*)d + a, b - a), from));
        else
        {
            // bf16 ⇄ fp16: through float32 (exact widening, one rounding).
            using var wide = Tensor.Create(src.ShapeArray, DType.Float32, zeroed: false, scoped: false);
            ConvertDType(src, wide);
            ConvertDType(wide, dst);
        }
    }

    private static Span<float> Span(Tensor t) => new(t.Data, checked((int)t.Count));
}
