// Fused softmax cross-entropy over the vocabulary: logits [n, v], targets [n], losses [n], lse [n]. The [n, v]
// probabilities are never stored: the forward keeps the log-sum-exp, the backward recomputes softmax from it.

// losses[r] = lse[r] - logits[r, targets[r]], 0 when targets[r] == ignoreIndex (lse is still computed). One block per row.
extern "C" __global__ void peft_cross_entropy_fwd_f32(const float* logits, const int* targets, float* losses, float* lse,
    int n, int v, int ignoreIndex)
{
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= n) return;
    const float* row = logits + (i64)r * v;
    float m = -PEFT_INF;
    for (int j = threadIdx.x; j < v; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, scratch);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) sum += expf(row[j] - m);
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0)
    {
        float l = m + logf(sum);
        lse[r] = l;
        int t = targets[r];
        losses[r] = t == ignoreIndex ? 0.0f : l - row[t];
    }
}

// dlogits = gradScale * (softmax(logits) - onehot(target)); all-zero rows for ignored targets. dlogits may alias logits.
// Grid (column blocks, row blocks): rows stride by gridDim.y (at most 65,535), columns by gridDim.x * blockDim.x.
extern "C" __global__ void peft_cross_entropy_bwd_f32(const float* logits, const float* lse, const int* targets, float* dlogits,
    int n, int v, int ignoreIndex, float gradScale)
{
    for (int r = blockIdx.y; r < n; r += gridDim.y)
    {
        int t = targets[r];
        float l = lse[r];
        i64 o = (i64)r * v;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < v; j += gridDim.x * blockDim.x)
        {
            float g = 0.0f;
            if (t != ignoreIndex) g = gradScale * (expf(logits[o + j] - l) - (j == t ? 1.0f : 0.0f));
            dlogits[o + j] = g;
        }
    }
}
