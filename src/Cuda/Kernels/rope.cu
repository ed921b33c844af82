// Rotary position embedding of x [b, t, h, d] into y (may be x). Pair i of the token at position p rotates by
// p * theta^(-2i/d); interleaved: pairs (2i, 2i+1) (Meta / llama2.c); otherwise (i, i + d/2) (Hugging Face rotate-half).
// inverse rotates by the negated angle (the backward). One thread per pair; float32 like the CPU kernel.
extern "C" __global__ void peft_rope_f32(const float* x, float* y, int b, int t, int h, int d, int positionOffset, float theta,
    int interleaved, int inverse)
{
    int half = d >> 1;
    i64 pairs = (i64)b * t * h * half;
    for (i64 k = (i64)blockIdx.x * blockDim.x + threadIdx.x; k < pairs; k += (i64)gridDim.x * blockDim.x)
    {
        int i = (int)(k % half);
        i64 head = k / half;               // (bi * t + ti) * h + hi
        int ti = (int)((head / h) % t);
        float freq = 1.0f / powf(theta, 2 * i / (float)d);
        float angle = (float)(positionOffset + ti) * freq;
        float c = cosf(angle);
        float s = inverse ? -sinf(angle) : sinf(angle);
        i64 base = head * d;
        i64 i0 = interleaved ? base + 2 * i : base + i;
        i64 i1 = interleaved ? i0 + 1 : i0 + half;
        float x0 = x[i0], x1 = x[i1];
        y[i0] = x0 * c - x1 * s;
        y[i1] = x0 * s + x1 * c;
    }
}
