namespace PeftGen.Backends.Cpu.Kernels;

/// <summary>
/// Softmax cross-entropy over the vocabulary, fused so the [n, v] probabilities are never stored:
/// the forward keeps only the per-row log-sum-exp, the backward recomputes softmax from it.
/// </summary>
internal static unsafe class CrossEntropyKernel
{
    /// <summary>
    /// losses[r] = lse[r] − logits[r, targets[r]] with lse[r] = log Σ exp(logits[r, :]); rows whose
    /// target is ignoreIndex get loss 0 (their lse is still computed).
    /// </summary>
    public static void Forward(float* logits, int* targets, float* losses, float* lse, int n, int v, int ignoreIndex)
    {
        // logits: [n, v]; targets, losses, lse: [n]
        // Validate up front: an exception inside the parallel loop would surface as an AggregateException.
        ValidateTargets(targets, n, v, ignoreIndex);
        CpuParallel.ForRange(n, SoftmaxKernel.RowsPerTask(v), (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                float* row = logits + (long)r * v;
                float max = SoftmaxKernel.RowMax(row, v);
                float rowLse = max + MathF.Log(SoftmaxKernel.SumExpShift(row, v, max));
                lse[r] = rowLse;
                int target = targets[r];
                losses[r] = target == ignoreIndex ? 0f : rowLse - row[target];
            }
        });
    }

    /// <summary>
    /// dlogits = gradScale · (softmax(logits) − onehot(target)), all-zero rows for ignored targets.
    /// dlogits may alias logits: each element is read before it is overwritten.
    /// </summary>
    public static void Backward(float* logits, float* lse, int* targets, float* dlogits, int n, int v, int ignoreIndex, float gradScale)
    {
        // logits, dlogits: [n, v]; lse, targets: [n]
        ValidateTargets(targets, n, v, ignoreIndex);
        CpuParallel.ForRange(n, SoftmaxKernel.RowsPerTask(v), (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                float* row = logits + (long)r * v;
                float* grad = dlogits + (long)r * v;
                int target = targets[r];
                if (target == ignoreIndex)
                {
                    new Span<float>(grad, v).Clear();
                    continue;
                }
                SoftmaxKernel.ExpShift(row, grad, v, lse[r], gradScale);
                grad[target] -= gradScale;
            }
        });
    }

    /// <summary>
    /// <see cref="Forward"/> and then <see cref="Backward"/> into the logits themselves, in one sweep per row: the row's
    /// max, then exp(x − max) written in place and summed (one exp per element, not two), then scaled by gradScale / Σ with
    /// gradScale taken off the target. Rows whose target is ignoreIndex get loss 0 and an all-zero gradient.
    /// </summary>
    public static void ForwardWithGradient(float* logits, int* targets, float* losses, int n, int v, int ignoreIndex, float gradScale)
    {
        // logits: [n, v], overwritten by gradScale · (softmax − onehot); targets, losses: [n]
        ValidateTargets(targets, n, v, ignoreIndex);
        CpuParallel.ForRange(n, SoftmaxKernel.RowsPerTask(v), (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                float* row = logits + (long)r * v;
                int target = targets[r];
                if (target == ignoreIndex)
                {
                    losses[r] = 0f;
                    new Span<float>(row, v).Clear();
                    continue;
                }
                float max = SoftmaxKernel.RowMax(row, v);
                float targetLogit = row[target];
                float sum = SoftmaxKernel.ExpShift(row, row, v, max, 1f);                  // row = exp(x − max)
                losses[r] = max + MathF.Log(sum) - targetLogit;
                SoftmaxKernel.Scale(row, v, gradScale / sum);
                row[target] -= gradScale;
            }
        });
    }

    internal static void ValidateTargets(int* targets, int n, int v, int ignoreIndex)
    {
        for (int r = 0; r < n; r++)
        {
            int target = targets[r];
            if (target != ignoreIndex && (uint)target >= (uint)v)
            {
                throw new ArgumentOutOfRangeException(nameof(targets), target,
                    $"targets[{r}] = {target} is neither a class index in [0, {v}) nor the ignore index {ignoreIndex}.");
            }
        }
    }
}
