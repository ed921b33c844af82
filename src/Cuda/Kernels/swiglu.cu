// SwiGLU y = silu(gate) * up and SiLU silu(g) = g * sigmoid(g), elementwise (outputs may alias inputs).

__device__ __forceinline__ float peft_sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

extern "C" __global__ void peft_swiglu_fwd_f32(const float* gate, const float* up, float* y, i64 n)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        float g = gate[i];
        y[i] = g * peft_sigmoid(g) * up[i];
    }
}

// dgate = dy * up * silu'(gate), dup = dy * silu(gate), silu'(g) = s * (1 + g * (1 - s)); written or added.
extern "C" __global__ void peft_swiglu_bwd_f32(const float* dy, const float* gate, const float* up, float* dgate, float* dup,
    i64 n, int accumulate)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        float g = gate[i], u = up[i], d = dy[i];
        float s = peft_sigmoid(g);
        float dg = d * u * (s * (1.0f + g * (1.0f - s)));
        float du = d * g * s;
        dgate[i] = accumulate ? dgate[i] + dg : dg;
        dup[i] = accumulate ? dup[i] + du : du;
    }
}

extern "C" __global__ void peft_silu_fwd_f32(const float* x, float* y, i64 n)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        float g = x[i];
        y[i] = g * peft_sigmoid(g);
    }
}

extern "C" __global__ void peft_silu_bwd_f32(const float* dy, const float* x, float* dx, i64 n, int accumulate)
{
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    {
        float g = x[i];
        float s = peft_sigmoid(g);
        float value = dy[i] * (s * (1.0f + g * (1.0f - s)));
        dx[i] = accumulate ? dx[i] + value : value;
    }
}
