// AdamW updates, float32 master weights. The arithmetic follows the CPU (CpuBackend.AdamWStep, AdamW8bit) operation
// for operation, with round-to-nearest intrinsics so the compiler fuses nothing the CPU does not:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p = p * decay - stepSize * m / (sqrt(v) * invSqrtBc2 + eps)
// with decay = 1 - lr * weightDecay, stepSize = lr / bc1, invSqrtBc2 = 1 / sqrt(bc2) computed on the host.

__device__ __forceinline__ void peft_adam_moments(float g, float b1, float b2, float& m, float& v)
{
    m = __fadd_rn(__fmul_rn(b1, m), __fmul_rn(1.0f - b1, g));
    v = __fadd_rn(__fmul_rn(b2, v), __fmul_rn(__fmul_rn(1.0f - b2, g), g));
}

__device__ __forceinline__ float peft_adam_param(float p, float m, float v, float decay, float stepSize, float invSqrtBc2, float eps)
{
    float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(v), invSqrtBc2), eps);
    return __fsub_rn(__fmul_rn(p, decay), __fdiv_rn(__fmul_rn(stepSize, m), denom));
}

// One tensor, float32 moments.
extern "C" __global__ void peft_adamw_f32(float* p, const float* g, float* m, float* v, i64 n,
    float beta1, float beta2, float eps, float decay, float stepSize, float invSqrtBc2)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        float mi = m[i], vi = v[i];
        peft_adam_moments(g[i], beta1, beta2, mi, vi);
        m[i] = mi;
        v[i] = vi;
        p[i] = peft_adam_param(p[i], mi, vi, decay, stepSize, invSqrtBc2, eps);
    }
}

// One entry of a multi-tensor update (the host writes an array of these to device memory). Per-tensor decay and step
// size carry LoRA+ groups' different learning rates.
struct AdamTensor
{
    float* p;
    const float* g;
    float* m;
    float* v;
    i64 n;
    i64 firstChunk;     // index of this tensor's first chunk among all chunks
    float decay;
    float stepSize;
};

// Many tensors in one launch: block x handles chunk x of the concatenated chunk list (chunkSize elements each), found
// by binary search over the tensors' firstChunk. Grid: total chunks; any block size.
extern "C" __global__ void peft_adamw_multi_f32(const AdamTensor* tensors, int tensorCount, int chunkSize,
    float beta1, float beta2, float eps, float invSqrtBc2)
{
    i64 chunk = blockIdx.x;
    int lo = 0, hi = tensorCount - 1;
    while (lo < hi)
    {
        int mid = (lo + hi + 1) >> 1;
        if (tensors[mid].firstChunk <= chunk) lo = mid;
        else hi = mid - 1;
    }
    AdamTensor t = tensors[lo];
    i64 start = (chunk - t.firstChunk) * chunkSize;
    i64 end = min(t.n, start + chunkSize);
    for (i64 i = start + threadIdx.x; i < end; i += blockDim.x)
    {
        float mi = t.m[i], vi = t.v[i];
        peft_adam_moments(t.g[i], beta1, beta2, mi, vi);
        t.m[i] = mi;
        t.v[i] = vi;
        t.p[i] = peft_adam_param(t.p[i], mi, vi, t.decay, t.stepSize, invSqrtBc2, eps);
    }
}

#define ADAM8_BLOCK 256
#define ADAM8_SIGNED_ZERO 127

// The index of the map value nearest x (clamped to [-1, 1]); midpoints (a + b) * 0.5 in float32 decide, a tie goes to the
// neighbour of smaller magnitude, NaN to 0: DynamicMap.Encode on the CPU. map: 256 ascending values in shared memory.
__device__ int peft_dynamic_encode(float x, const float* map)
{
    if (x != x) return 0;
    x = fminf(fmaxf(x, -1.0f), 1.0f);
    int lo = 0, hi = 256;
    while (lo < hi)
    {
        int mid = (lo + hi) >> 1;
        if (map[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return 0;
    if (lo == 256) return 255;
    float below = map[lo - 1], above = map[lo];
    float midpoint = __fmul_rn(__fadd_rn(below, above), 0.5f);
    if (x > midpoint) return lo;
    if (x < midpoint) return lo - 1;
    return fabsf(below) <= fabsf(above) ? lo - 1 : lo;
}

// 8-bit blockwise AdamW (bitsandbytes' AdamW8bit layout): m as signed dynamic-map codes, v as unsigned ones, one fp32
// absmax per 256 elements each. One CUDA block (256 threads) per quantization block: dequantize, update in float32,
// take the new absmax of m and v, requantize; a negative m never rounds to the zero code (it keeps its sign).
extern "C" __global__ void peft_adamw8bit_f32(float* p, const float* g, u8* codesM, u8* codesV, float* absmaxM, float* absmaxV,
    const float* signedMap, const float* unsignedMap, i64 n,
    float beta1, float beta2, float eps, float decay, float stepSize, float invSqrtBc2)
{
    __shared__ float smap[256];
    __shared__ float umap[256];
    __shared__ float scratch[32];
    smap[threadIdx.x] = signedMap[threadIdx.x];
    umap[threadIdx.x] = unsignedMap[threadIdx.x];
    __syncthreads();
    i64 blockIndex = blockIdx.x;
    i64 i = blockIndex * ADAM8_BLOCK + threadIdx.x;
    bool valid = i < n;
    float scaleM = absmaxM[blockIndex], scaleV = absmaxV[blockIndex];
    float mi = 0.0f, vi = 0.0f;
    if (valid)
    {
        mi = __fmul_rn(smap[codesM[i]], scaleM);
        vi = __fmul_rn(umap[codesV[i]], scaleV);
        peft_adam_moments(g[i], beta1, beta2, mi, vi);
        p[i] = peft_adam_param(p[i], mi, vi, decay, stepSize, invSqrtBc2, eps);
    }
    float maxM = block_max(valid ? fabsf(mi) : 0.0f, scratch);
    float maxV = block_max(valid ? fabsf(vi) : 0.0f, scratch);
    if (threadIdx.x == 0)
    {
        absmaxM[blockIndex] = maxM;
        absmaxV[blockIndex] = maxV;
    }
    if (!valid) return;
    int cm = maxM == 0.0f ? peft_dynamic_encode(0.0f, smap) : peft_dynamic_encode(__fdiv_rn(mi, maxM), smap);
    int cv = maxV == 0.0f ? peft_dynamic_encode(0.0f, umap) : peft_dynamic_encode(__fdiv_rn(vi, maxV), umap);
    if (mi < 0.0f && cm == ADAM8_SIGNED_ZERO) cm -= 1;
    codesM[i] = (u8)cm;
    codesV[i] = (u8)cv;
}
