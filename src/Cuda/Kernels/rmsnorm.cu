// RMSNorm: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps) per row. x, y, dy, dx: [n, c]; w, dw: [c]; rstd: [n].

// One block per row.
extern "C" __global__ void peft_rmsnorm_fwd_f32(const float* x, const float* w, float* y, float* rstd, int n, int c, float eps)
{
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= n) return;
    const float* xr = x + (i64)r * c;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) sum += xr[j] * xr[j];
    sum = block_sum(sum, scratch);
    float rs = 1.0f / sqrtf(sum / c + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    float* yr = y + (i64)r * c;
    for (int j = threadIdx.x; j < c; j += blockDim.x) yr[j] = xr[j] * rs * w[j];
}

// dx = rstd * (dy * w) - rstd^3 / c * (sum dy * w * x) * x, written or added (accumulate). One block per row.
extern "C" __global__ void peft_rmsnorm_bwd_dx_f32(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
    int n, int c, int accumulate)
{
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= n) return;
    i64 o = (i64)r * c;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) dot += dy[o + j] * w[j] * x[o + j];
    dot = block_sum(dot, scratch);
    float rs = rstd[r];
    float k = rs * rs * rs / c * dot;
    for (int j = threadIdx.x; j < c; j += blockDim.x)
    {
        float value = rs * (dy[o + j] * w[j]) - k * x[o + j];
        dx[o + j] = accumulate ? dx[o + j] + value : value;
    }
}

// partials[chunk, j] = sum over the chunk's rows of dy[r, j] * x[r, j] * rstd[r]. Grid (ceil(c / blockDim.x), chunks).
// The host then adds the [chunks, c] partials into dw with peft_column_sum_f32 (fixed order: deterministic).
extern "C" __global__ void peft_rmsnorm_bwd_dw_f32(const float* dy, const float* x, const float* rstd, float* partials,
    int n, int c, int rowsPerChunk)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int chunk = blockIdx.y;
    if (j >= c) return;
    int start = chunk * rowsPerChunk, end = min(n, start + rowsPerChunk);
    float sum = 0.0f;
    for (int r = start; r < end; r++)
    {
        i64 o = (i64)r * c + j;
        sum += dy[o] * x[o] * rstd[r];
    }
    partials[(i64)chunk * c + j] = sum;
}
