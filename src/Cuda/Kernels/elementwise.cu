// Elementwise ops, reductions, copies and embeddings over float32 tensors. Grid-stride loops: any grid covers any n.

#define PEFT_MAX_RANK 8

// Shape and strides of a strided copy (elements), outermost first; dims beyond rank are unused.
struct StridedLayout
{
    i64 size[PEFT_MAX_RANK];
    i64 src[PEFT_MAX_RANK];
    i64 dst[PEFT_MAX_RANK];
};

// y[i] = value.
extern "C" __global__ void peft_fill_f32(float* y, float value, i64 n)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) y[i] = value;
}

// dst (+)= src for two strided views of the same shape (rank <= 8); element i is the row-major index of the shape.
extern "C" __global__ void peft_copy_strided_f32(const float* src, float* dst, i64 n, int rank, StridedLayout layout, int accumulate)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        i64 rest = i, s = 0, d = 0;
        for (int dim = rank - 1; dim >= 0; dim--)
        {
            i64 index = rest % layout.size[dim];
            rest /= layout.size[dim];
            s += index * layout.src[dim];
            d += index * layout.dst[dim];
        }
        float value = src[s];
        dst[d] = accumulate ? dst[d] + value : value;
    }
}

// y[i] = alpha * a[i] + beta * b[i % nb] (b repeats over a: bias broadcast).
extern "C" __global__ void peft_add_scaled_f32(const float* a, float alpha, const float* b, float beta, float* y, i64 n, i64 nb)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        y[i] = alpha * a[i] + beta * b[i % nb];
}

// y (+)= a * b.
extern "C" __global__ void peft_mul_f32(const float* a, const float* b, float* y, i64 n, int accumulate)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        float value = a[i] * b[i];
        y[i] = accumulate ? y[i] + value : value;
    }
}

// y (+)= a * v[i % c]: a [rows, c], v [c].
extern "C" __global__ void peft_mul_rows_f32(const float* a, const float* v, float* y, i64 n, int c, int accumulate)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        float value = a[i] * v[i % c];
        y[i] = accumulate ? y[i] + value : value;
    }
}

// y (+)= s * x.
extern "C" __global__ void peft_scale_f32(const float* x, float s, float* y, i64 n, int accumulate)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        float value = s * x[i];
        y[i] = accumulate ? y[i] + value : value;
    }
}

// dst[j] (+)= sum over rows of src[r, j] (* a[r, j] when a is not null). One thread per column, rows in order:
// deterministic, and neighbouring threads read neighbouring addresses.
extern "C" __global__ void peft_column_sum_f32(const float* src, const float* a, float* dst, int rows, int c, int accumulate)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= c) return;
    float sum = 0.0f;
    for (int r = 0; r < rows; r++)
    {
        i64 o = (i64)r * c + j;
        sum += a ? src[o] * a[o] : src[o];
    }
    dst[j] = accumulate ? dst[j] + sum : sum;
}

// partials[block] = sum of x (or of x^2 when squares) over this block's grid-stride share, in double.
// The host adds the gridDim.x partials in order, so the result does not depend on timing.
extern "C" __global__ void peft_reduce_sum_f64(const float* x, double* partials, i64 n, int squares)
{
    __shared__ double scratch[32];
    double sum = 0.0;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        double value = x[i];
        sum += squares ? value * value : value;
    }
    sum = block_sum_double(sum, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// y = bf16(x), round to nearest even.
extern "C" __global__ void peft_f32_to_bf16(const float* x, bf16_t* y, i64 n)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) y[i] = f32_to_bf16(x[i]);
}

// y = float(x).
extern "C" __global__ void peft_bf16_to_f32(const bf16_t* x, float* y, i64 n)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) y[i] = bf16_to_f32(x[i]);
}

// y = float(x) for fp16 x (exact).
extern "C" __global__ void peft_f16_to_f32(const f16_t* x, float* y, i64 n)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) y[i] = f16_to_f32(x[i]);
}

// y = fp16(x), round to nearest even.
extern "C" __global__ void peft_f32_to_f16(const float* x, f16_t* y, i64 n)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) y[i] = f32_to_f16(x[i]);
}

// y = bf16(x) for fp16 x: widened exactly, rounded once (an fp16 weight fed to the bf16 tensor-core GEMM).
extern "C" __global__ void peft_f16_to_bf16(const f16_t* x, bf16_t* y, i64 n)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) y[i] = f32_to_bf16(f16_to_f32(x[i]));
}

// y[r, :] = float(weight[ids[r], :]) for a frozen 16-bit table: weight [vocab, c] bf16 (is_bf16 != 0) or fp16, ids [n],
// y [n, c] float32. One block per row; only the rows looked up are widened. ids were range-checked on the host.
extern "C" __global__ void peft_embedding_fwd_16bit(const unsigned short* weight, const int* ids, float* y, int n, int c, int is_bf16)
{
    int r = blockIdx.x;
    if (r >= n) return;
    const unsigned short* src = weight + (i64)ids[r] * c;
    float* dst = y + (i64)r * c;
    for (int j = threadIdx.x; j < c; j += blockDim.x) dst[j] = is_bf16 ? bf16_to_f32(src[j]) : f16_to_f32(src[j]);
}

// y[r, :] = weight[ids[r], :]: weight [vocab, c], ids [n], y [n, c]. One block per row. ids were range-checked on the host.
extern "C" __global__ void peft_embedding_fwd_f32(const float* weight, const int* ids, float* y, int n, int c)
{
    int r = blockIdx.x;
    if (r >= n) return;
    const float* src = weight + (i64)ids[r] * c;
    float* dst = y + (i64)r * c;
    for (int j = threadIdx.x; j < c; j += blockDim.x) dst[j] = src[j];
}

// dweight[ids[r], :] += dy[r, :] for every row r, in row order. One thread per column, so rows that share an id never
// race and the sum order is fixed (deterministic, no atomics).
extern "C" __global__ void peft_embedding_bwd_f32(const float* dy, const int* ids, float* dweight, int n, int c)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= c) return;
    for (int r = 0; r < n; r++) dweight[(i64)ids[r] * c + j] += dy[(i64)r * c + j];
}

// Inverted-dropout mask from one seed, the same function of (seed, i) as CudaDropout.MaskValue on the host:
// z = SplitMix64 finaliser of seed + (i + 1) * golden ratio; u = top 24 bits / 2^24; mask = u < p ? 0 : keep.
extern "C" __global__ void peft_dropout_mask_f32(float* mask, i64 n, unsigned long long seed, float p, float keep)
{
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        unsigned long long z = seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)(unsigned int)(z >> 40) * (1.0f / 16777216.0f);
        mask[i] = u < p ? 0.0f : keep;
    }
}
