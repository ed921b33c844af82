// PeftGen CUDA kernels: shared prelude, prepended by the host to every module before NVRTC compiles it.
// No system headers: NVRTC needs none of them, and bf16 is handled as raw 16-bit words (the upper half of a float32).
typedef unsigned char u8;
typedef unsigned short bf16_t;
typedef unsigned int u32;
typedef long long i64;

#define PEFT_FULL_MASK 0xffffffffu
#define PEFT_INF __int_as_float(0x7f800000)

// bf16 -> f32: the 16 bits are the upper half of the float32.
__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((u32)h) << 16); }

// f32 -> bf16 with round-to-nearest-even; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16_t f32_to_bf16(float f)
{
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

// IEEE half, also as raw 16-bit words: NVRTC without headers has no cuda_fp16.h, so the conversions are the PTX cvt
// instructions that header wraps.
typedef unsigned short f16_t;

// f16 -> f32 (exact).
__device__ __forceinline__ float f16_to_f32(f16_t h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// f32 -> f16 with round-to-nearest-even (overflow becomes +-inf, as PyTorch's half()).
__device__ __forceinline__ f16_t f32_to_f16(float f)
{
    f16_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(PEFT_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_double(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(PEFT_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(PEFT_FULL_MASK, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// scratch: 32 floats of shared memory.
__device__ float block_sum(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0)
    {
        float w = lane < warps ? scratch[lane] : 0.0f;
        w = warp_sum(w);
        if (lane == 0) scratch[0] = w;
    }
    __syncthreads();
    return scratch[0];
}

// Max over the block; every thread gets the result. scratch: 32 floats of shared memory.
__device__ float block_max(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0)
    {
        float w = lane < warps ? scratch[lane] : -PEFT_INF;
        w = warp_max(w);
        if (lane == 0) scratch[0] = w;
    }
    __syncthreads();
    return scratch[0];
}

// Double-precision block sum; scratch: 32 doubles of shared memory.
__device__ double block_sum_double(double v, double* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum_double(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0)
    {
        double w = lane < warps ? scratch[lane] : 0.0;
        w = warp_sum_double(w);
        if (lane == 0) scratch[0] = w;
    }
    __syncthreads();
    return scratch[0];
}
