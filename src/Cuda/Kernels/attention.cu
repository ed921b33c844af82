// Causal grouped-query attention, flash-style: keys and values stream through shared memory in tiles of 32 and the
// softmax is computed online, so no [tq, tk] score matrix exists. Query head h reads KV head h / (hq / hkv); query i
// sees keys j <= i + (tk - tq). Layouts: q, out, dout, dq [b, tq, hq, d]; k, v, dk, dv [b, tkCapacity, hkv, d] (rows
// < tk valid); lse, delta [b, hq, tq]. Head size d <= 128 (each lane owns up to 4 of the d output columns).
// Block: 8 warps (256 threads); a warp owns one query row (forward, dq) or one key row (dk/dv).

#define ATT_TILE 32
#define ATT_ROWS 8
#define ATT_MAX_D 128
#define ATT_COLS_PER_LANE (ATT_MAX_D / 32)

// Grid (ceil(tq / 8), b * hq). Dynamic shared memory: (32 * (d + 1) + 32 * d + 8 * d) floats.
extern "C" __global__ void peft_attention_fwd_f32(const float* q, const float* k, const float* v, float* out, float* lse,
    int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
{
    extern __shared__ float smem[];
    float* ks = smem;                          // [32, d + 1] key tile (padded: lanes read different rows)
    float* vs = ks + ATT_TILE * (d + 1);       // [32, d] value tile
    float* qs = vs + ATT_TILE * d;             // [8, d] the block's query rows, pre-scaled
    int bi = blockIdx.y / hq, h = blockIdx.y % hq, kvh = h / (hq / hkv);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int offset = tk - tq;
    int i = blockIdx.x * ATT_ROWS + warp;
    bool active = i < tq;
    i64 qrow = (((i64)bi * tq + i) * hq + h) * d;
    if (active) for (int c = lane; c < d; c += 32) qs[warp * d + c] = q[qrow + c] * scale;
    int lastQuery = min(tq - 1, (int)blockIdx.x * ATT_ROWS + ATT_ROWS - 1);
    int keyEnd = lastQuery + offset + 1;       // keys any row of the block needs
    int myEnd = active ? i + offset + 1 : 0;   // keys this row sees
    float m = -PEFT_INF, l = 0.0f;
    float acc[ATT_COLS_PER_LANE];
    for (int r = 0; r < ATT_COLS_PER_LANE; r++) acc[r] = 0.0f;
    for (int j0 = 0; j0 < keyEnd; j0 += ATT_TILE)
    {
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_TILE * d; idx += blockDim.x)
        {
            int r = idx / d, c = idx - r * d, j = j0 + r;
            float kv = 0.0f, vv = 0.0f;
            if (j < tk)
            {
                i64 o = (((i64)bi * tkCapacity + j) * hkv + kvh) * d + c;
                kv = k[o];
                vv = v[o];
            }
            ks[r * (d + 1) + c] = kv;
            vs[r * d + c] = vv;
        }
        __syncthreads();
        if (!active || j0 >= myEnd) continue; // warp-uniform
        int j = j0 + lane;
        float s = -PEFT_INF;
        if (j < myEnd)
        {
            float dot = 0.0f;
            for (int c = 0; c < d; c++) dot += qs[warp * d + c] * ks[lane * (d + 1) + c];
            s = dot;
        }
        float mNew = fmaxf(m, warp_max(s));    // finite: key j0 <= i + offset is always seen
        float p = j < myEnd ? expf(s - mNew) : 0.0f;
        float alpha = expf(m - mNew);          // 0 on the first tile (m = -inf)
        l = l * alpha + warp_sum(p);
        int n = min(ATT_TILE, myEnd - j0);
        for (int r = 0; r < ATT_COLS_PER_LANE; r++) acc[r] *= alpha;
        for (int jj = 0; jj < n; jj++)
        {
            float pj = __shfl_sync(PEFT_FULL_MASK, p, jj);
            for (int r = 0; r < ATT_COLS_PER_LANE; r++)
            {
                int c = lane + 32 * r;
                if (c < d) acc[r] += pj * vs[jj * d + c];
            }
        }
        m = mNew;
    }
    if (!active) return;
    float inv = 1.0f / l;
    for (int r = 0; r < ATT_COLS_PER_LANE; r++)
    {
        int c = lane + 32 * r;
        if (c < d) out[qrow + c] = acc[r] * inv;
    }
    if (lse && lane == 0) lse[((i64)bi * hq + h) * tq + i] = m + logf(l);
}

// delta[b, h, i] = dout[b, i, h, :] . out[b, i, h, :] (the D term of the backward). One warp per query row; grid
// (ceil(tq / 8), b * hq), 256 threads.
extern "C" __global__ void peft_attention_bwd_delta_f32(const float* dout, const float* out, float* delta, int b, int tq, int hq, int d)
{
    int bi = blockIdx.y / hq, h = blockIdx.y % hq;
    int i = blockIdx.x * ATT_ROWS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (i >= tq) return;
    i64 row = (((i64)bi * tq + i) * hq + h) * d;
    float sum = 0.0f;
    for (int c = lane; c < d; c += 32) sum += dout[row + c] * out[row + c];
    sum = warp_sum(sum);
    if (lane == 0) delta[((i64)bi * hq + h) * tq + i] = sum;
}

// dq = scale * sum_j ds_ij k_j with p_ij = exp(scale q_i.k_j - lse_i), ds_ij = p_ij (dout_i.v_j - delta_i). Overwrites dq.
// Grid (ceil(tq / 8), b * hq), 256 threads. Dynamic shared memory: (2 * 32 * (d + 1) + 2 * 8 * d) floats.
extern "C" __global__ void peft_attention_bwd_dq_f32(const float* dout, const float* q, const float* k, const float* v,
    const float* lse, const float* delta, float* dq, int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
{
    extern __shared__ float smem[];
    float* ks = smem;                          // [32, d + 1]
    float* vs = ks + ATT_TILE * (d + 1);       // [32, d + 1]
    float* qs = vs + ATT_TILE * (d + 1);       // [8, d] pre-scaled queries
    float* ds = qs + ATT_ROWS * d;             // [8, d] dout rows
    int bi = blockIdx.y / hq, h = blockIdx.y % hq, kvh = h / (hq / hkv);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int offset = tk - tq;
    int i = blockIdx.x * ATT_ROWS + warp;
    bool active = i < tq;
    i64 qrow = (((i64)bi * tq + i) * hq + h) * d;
    if (active)
        for (int c = lane; c < d; c += 32)
        {
            qs[warp * d + c] = q[qrow + c] * scale;
            ds[warp * d + c] = dout[qrow + c];
        }
    float li = 0.0f, di = 0.0f;
    if (active)
    {
        li = lse[((i64)bi * hq + h) * tq + i];
        di = delta[((i64)bi * hq + h) * tq + i];
    }
    int lastQuery = min(tq - 1, (int)blockIdx.x * ATT_ROWS + ATT_ROWS - 1);
    int keyEnd = lastQuery + offset + 1;
    int myEnd = active ? i + offset + 1 : 0;
    float acc[ATT_COLS_PER_LANE];
    for (int r = 0; r < ATT_COLS_PER_LANE; r++) acc[r] = 0.0f;
    for (int j0 = 0; j0 < keyEnd; j0 += ATT_TILE)
    {
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_TILE * d; idx += blockDim.x)
        {
            int r = idx / d, c = idx - r * d, j = j0 + r;
            float kv = 0.0f, vv = 0.0f;
            if (j < tk)
            {
                i64 o = (((i64)bi * tkCapacity + j) * hkv + kvh) * d + c;
                kv = k[o];
                vv = v[o];
            }
            ks[r * (d + 1) + c] = kv;
            vs[r * (d + 1) + c] = vv;
        }
        __syncthreads();
        if (!active || j0 >= myEnd) continue;
        int j = j0 + lane;
        float dsj = 0.0f;
        if (j < myEnd)
        {
            float s = 0.0f, dp = 0.0f;
            for (int c = 0; c < d; c++)
            {
                s += qs[warp * d + c] * ks[lane * (d + 1) + c];
                dp += ds[warp * d + c] * vs[lane * (d + 1) + c];
            }
            float p = expf(s - li);
            dsj = p * (dp - di);
        }
        int n = min(ATT_TILE, myEnd - j0);
        for (int jj = 0; jj < n; jj++)
        {
            float g = __shfl_sync(PEFT_FULL_MASK, dsj, jj);
            for (int r = 0; r < ATT_COLS_PER_LANE; r++)
            {
                int c = lane + 32 * r;
                if (c < d) acc[r] += g * ks[jj * (d + 1) + c];
            }
        }
    }
    if (!active) return;
    for (int r = 0; r < ATT_COLS_PER_LANE; r++)
    {
        int c = lane + 32 * r;
        if (c < d) dq[qrow + c] = acc[r] * scale;
    }
}

// dk_j = scale * sum_{h in group, i} ds_ij q_i, dv_j = sum_{h in group, i} p_ij dout_i. One warp per key row, summing
// over every query head of its KV group and every query that sees it, in a fixed order (deterministic, no atomics).
// Overwrites dk, dv rows < tk. Grid (ceil(tk / 8), b * hkv), 256 threads.
// Dynamic shared memory: (2 * 32 * (d + 1) + 2 * 32 + 2 * 8 * d) floats.
extern "C" __global__ void peft_attention_bwd_dkdv_f32(const float* dout, const float* q, const float* k, const float* v,
    const float* lse, const float* delta, float* dk, float* dv, int b, int tq, int tk, int tkCapacity, int hq, int hkv, int d, float scale)
{
    extern __shared__ float smem[];
    float* qs = smem;                          // [32, d + 1] query tile, pre-scaled
    float* os = qs + ATT_TILE * (d + 1);       // [32, d + 1] dout tile
    float* ls = os + ATT_TILE * (d + 1);       // [32] lse of the tile's queries
    float* es = ls + ATT_TILE;                 // [32] delta of the tile's queries
    float* kw = es + ATT_TILE;                 // [8, d] this block's key rows
    float* vw = kw + ATT_ROWS * d;             // [8, d] this block's value rows
    int bi = blockIdx.y / hkv, kvh = blockIdx.y % hkv;
    int group = hq / hkv;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int offset = tk - tq;
    int j = blockIdx.x * ATT_ROWS + warp;
    bool active = j < tk;
    i64 krow = (((i64)bi * tkCapacity + j) * hkv + kvh) * d;
    if (active)
        for (int c = lane; c < d; c += 32)
        {
            kw[warp * d + c] = k[krow + c];
            vw[warp * d + c] = v[krow + c];
        }
    int firstKey = blockIdx.x * ATT_ROWS;
    int firstQuery = max(0, firstKey - offset); // queries before it see none of the block's keys
    int myFirst = max(0, j - offset);
    float dkAcc[ATT_COLS_PER_LANE], dvAcc[ATT_COLS_PER_LANE];
    for (int r = 0; r < ATT_COLS_PER_LANE; r++) dkAcc[r] = dvAcc[r] = 0.0f;
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
    {
        for (int i0 = firstQuery - firstQuery % ATT_TILE; i0 < tq; i0 += ATT_TILE)
        {
            __syncthreads();
            for (int idx = threadIdx.x; idx < ATT_TILE * d; idx += blockDim.x)
            {
                int r = idx / d, c = idx - r * d, i = i0 + r;
                float qv = 0.0f, ov = 0.0f;
                if (i < tq)
                {
                    i64 o = (((i64)bi * tq + i) * hq + h) * d + c;
                    qv = q[o] * scale;
                    ov = dout[o];
                }
                qs[r * (d + 1) + c] = qv;
                os[r * (d + 1) + c] = ov;
            }
            if (threadIdx.x < ATT_TILE)
            {
                int i = i0 + threadIdx.x;
                ls[threadIdx.x] = i < tq ? lse[((i64)bi * hq + h) * tq + i] : 0.0f;
                es[threadIdx.x] = i < tq ? delta[((i64)bi * hq + h) * tq + i] : 0.0f;
            }
            __syncthreads();
            if (!active || i0 + ATT_TILE <= myFirst) continue; // warp-uniform
            int i = i0 + lane;
            float p = 0.0f, dsi = 0.0f;
            if (i < tq && i >= myFirst)
            {
                float s = 0.0f, dp = 0.0f;
                for (int c = 0; c < d; c++)
                {
                    s += qs[lane * (d + 1) + c] * kw[warp * d + c];
                    dp += os[lane * (d + 1) + c] * vw[warp * d + c];
                }
                p = expf(s - ls[lane]);
                dsi = p * (dp - es[lane]);
            }
            for (int ii = 0; ii < ATT_TILE; ii++)
            {
                float pi = __shfl_sync(PEFT_FULL_MASK, p, ii);
                float gi = __shfl_sync(PEFT_FULL_MASK, dsi, ii);
                for (int r = 0; r < ATT_COLS_PER_LANE; r++)
                {
                    int c = lane + 32 * r;
                    if (c < d)
                    {
                        dvAcc[r] += pi * os[ii * (d + 1) + c];
                        dkAcc[r] += gi * qs[ii * (d + 1) + c]; // qs holds scale * q: dk = scale * sum ds q
                    }
                }
            }
        }
    }
    if (!active) return;
    for (int r = 0; r < ATT_COLS_PER_LANE; r++)
    {
        int c = lane + 32 * r;
        if (c < d)
        {
            dk[krow + c] = dkAcc[r];
            dv[krow + c] = dvAcc[r];
        }
    }
}
