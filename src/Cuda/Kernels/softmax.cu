// Row softmax over the last dimension: x, y, dy, dx [n, c]. One block per row.

extern "C" __global__ void peft_softmax_fwd_f32(const float* x, float* y, int n, int c)
{
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= n) return;
    const float* xr = x + (i64)r * c;
    float* yr = y + (i64)r * c;
    float m = -PEFT_INF;
    for (int j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = block_max(m, scratch);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) sum += expf(xr[j] - m);
    sum = block_sum(sum, scratch);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < c; j += blockDim.x) yr[j] = expf(xr[j] - m) * inv;
}

// dx = y * (dy - sum(dy * y)), written or added.
extern "C" __global__ void peft_softmax_bwd_f32(const float* dy, const float* y, float* dx, int n, int c, int accumulate)
{
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= n) return;
    i64 o = (i64)r * c;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) dot += dy[o + j] * y[o + j];
    dot = block_sum(dot, scratch);
    for (int j = threadIdx.x; j < c; j += blockDim.x)
    {
        float value = y[o + j] * (dy[o + j] - dot);
        dx[o + j] = accumulate ? dx[o + j] + value : value;
    }
}
