using System.Runtime.InteropServices;
using PeftGen.Backends.Cpu.Kernels;
using PeftGen.Backends.Cuda;
using PeftGen.Quantization;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>
/// CPU/GPU parity of each CUDA kernel against the CPU kernel it mirrors, on random data. Skipped (with the resolver's
/// search in the message) where no CUDA device is present. Tolerances: max |gpu − cpu| ≤ 1e-4 · (1 + max |cpu|) for
/// float32 kernels (different summation order, fast exp), exact for the 4-bit dequantization.
/// </summary>
public sealed unsafe class CudaKernelParityTests
{
    private static CudaContext Context => CudaContext.Get(0);

    private static float[] Random(int n, int seed, float scale = 1f)
    {
        var random = new Random(seed);
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = (float)(random.NextDouble() * 2 - 1) * scale;
        return data;
    }

    private static void AssertClose(float[] expected, float[] actual, float tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        float worst = 0, magnitude = 0;
        int at = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            magnitude = MathF.Max(magnitude, MathF.Abs(expected[i]));
            float error = MathF.Abs(expected[i] - actual[i]);
            if (!(error <= worst)) { worst = error; at = i; }
        }
        Assert.True(worst <= tolerance * (1 + magnitude), $"{what}: largest error {worst:E3} at {at} (tolerance {tolerance * (1 + magnitude):E3})");
    }

    // Device buffers freed at the end of a test.
    private sealed class Buffers : IDisposable
    {
        private readonly List<DeviceBlock> _blocks = [];

        public ulong Up(float[] data) => Add(Context.Upload<float>(data));
        public ulong Up(int[] data) => Add(Context.Upload<int>(data));
        public ulong Up(byte[] data) => Add(Context.Upload<byte>(data));
        public ulong Zeros(int floats) => Up(new float[floats]);

        private ulong Add(DeviceBlock block)
        {
            _blocks.Add(block);
            return block.Pointer;
        }

        public void Dispose()
        {
            Context.Synchronize();
            foreach (var block in _blocks) Context.Allocator.Free(block);
        }
    }

    private static float[] Down(ulong pointer, int count) => Context.Download<float>(pointer, count);

    private static void Launch(CudaModule module, string name, LaunchConfig config, params IntPtr[] arguments) =>
        Context.Launch(module, name, config, arguments);

    [CudaFact]
    public void RmsNorm_forward_and_backward_match_the_cpu()
    {
        int n = 37, c = 288;
        float eps = 1e-5f;
        var x = Random(n * c, 1);
        var w = Random(c, 2);
        var dy = Random(n * c, 3);
        float[] y = new float[n * c], rstd = new float[n], dx = new float[n * c], dw = new float[c];
        fixed (float* px = x, pw = w, py = y, pr = rstd, pdy = dy, pdx = dx, pdw = dw)
        {
            RmsNormKernel.Forward(px, pw, py, pr, n, c, eps);
            RmsNormKernel.Backward(pdy, px, pw, pr, pdx, pdw, n, c, accumulateDx: false);
        }
        using var b = new Buffers();
        ulong gx = b.Up(x), gw = b.Up(w), gy = b.Zeros(n * c), gr = b.Zeros(n), gdy = b.Up(dy), gdx = b.Zeros(n * c), gdw = b.Zeros(c);
        Launch(CudaModule.RmsNorm, CudaKernelNames.RmsNormForward, CudaLaunch.PerRow(n, c), (IntPtr)(&gx), (IntPtr)(&gw), (IntPtr)(&gy), (IntPtr)(&gr), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&eps));
        int acc = 0, one = 1;
        Launch(CudaModule.RmsNorm, CudaKernelNames.RmsNormBackwardDx, CudaLaunch.PerRow(n, c), (IntPtr)(&gdy), (IntPtr)(&gx), (IntPtr)(&gw), (IntPtr)(&gr), (IntPtr)(&gdx), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&acc));
        var (rowsPerChunk, chunks) = CudaLaunch.RmsNormDwChunks(n);
        ulong partials = b.Zeros(chunks * c);
        Launch(CudaModule.RmsNorm, CudaKernelNames.RmsNormBackwardDw, CudaLaunch.PerColumn(c, chunks), (IntPtr)(&gdy), (IntPtr)(&gx), (IntPtr)(&gr), (IntPtr)(&partials), (IntPtr)(&n), (IntPtr)(&c), (IntPtr)(&rowsPerChunk));
        ulong nullPointer = 0;
        Launch(CudaModule.Elementwise, CudaKernelNames.ColumnSum, CudaLaunch.PerColumn(c), (IntPtr)(&partials), (IntPtr)(&nullPointer), (IntPtr)(&gdw), (IntPtr)(&chunks), (IntPtr)(&c), (IntPtr)(&one));
        AssertClose(y, Down(gy, n * c), 1e-5f, "rmsnorm y");
        AssertClose(rstd, Down(gr, n), 1e-5f, "rmsnorm rstd");
        AssertClose(dx, Down(gdx, n * c), 1e-4f, "rmsnorm dx");
        AssertClose(dw, Down(gdw, c), 1e-4f, "rmsnorm dw");
    }

    [CudaFact]
    public void Rope_matches_the_cpu_in_both_conventions_and_inverts()
    {
        int bs = 2, t = 19, h = 3, d = 16, offset = 5;
        float theta = 10000f;
        var x = Random(bs * t * h * d, 4);
        using var buffers = new Buffers();
        foreach (int interleaved in new[] { 0, 1 })
        {
            var expected = new float[x.Length];
            fixed (float* px = x, pe = expected) RopeKernel.Apply(px, pe, bs, t, h, d, offset, theta, interleaved == 1, inverse: false);
            ulong gx = buffers.Up(x), gy = buffers.Zeros(x.Length);
            int inverse = 0;
            var config = CudaLaunch.Elementwise((long)bs * t * h * d / 2, Context.Info.Multiprocessors);
            Launch(CudaModule.Rope, CudaKernelNames.Rope, config, (IntPtr)(&gx), (IntPtr)(&gy), (IntPtr)(&bs), (IntPtr)(&t), (IntPtr)(&h), (IntPtr)(&d), (IntPtr)(&offset), (IntPtr)(&theta), (IntPtr)(&interleaved), (IntPtr)(&inverse));
            AssertClose(expected, Down(gy, x.Length), 1e-5f, $"rope interleaved={interleaved}");
            inverse = 1;
            Launch(CudaModule.Rope, CudaKernelNames.Rope, config, (IntPtr)(&gy), (IntPtr)(&gy), (IntPtr)(&bs), (IntPtr)(&t), (IntPtr)(&h), (IntPtr)(&d), (IntPtr)(&offset), (IntPtr)(&theta), (IntPtr)(&interleaved), (IntPtr)(&inverse));
            AssertClose(x, Down(gy, x.Length), 1e-5f, $"rope inverse interleaved={interleaved}");
        }
    }

    [CudaFact]
    public void SwiGlu_forward_and_backward_match_the_cpu()
    {
        long n = 5000;
        var gate = Random((int)n, 5, 4f);
        var up = Random((int)n, 6);
        var dy = Random((int)n, 7);
        float[] y = new float[n], dgate = new float[n], dup = new float[n];
        fixed (float* pg = gate, pu = up, py = y, pdy = dy, pdg = dgate, pdu = dup)
        {
            SwiGluKernel.Forward(pg, pu, py, n);
            SwiGluKernel.Backward(pdy, pg, pu, pdg, pdu, n, accumulate: false);
        }
        using var b = new Buffers();
        ulong gg = b.Up(gate), gu = b.Up(up), gy = b.Zeros((int)n), gdy = b.Up(dy), gdg = b.Zeros((int)n), gdu = b.Zeros((int)n);
        int acc = 0;
        var config = CudaLaunch.Elementwise(n, Context.Info.Multiprocessors);
        Launch(CudaModule.SwiGlu, CudaKernelNames.SwiGluForward, config, (IntPtr)(&gg), (IntPtr)(&gu), (IntPtr)(&gy), (IntPtr)(&n));
        Launch(CudaModule.SwiGlu, CudaKernelNames.SwiGluBackward, config, (IntPtr)(&gdy), (IntPtr)(&gg), (IntPtr)(&gu), (IntPtr)(&gdg), (IntPtr)(&gdu), (IntPtr)(&n), (IntPtr)(&acc));
        AssertClose(y, Down(gy, (int)n), 1e-5f, "swiglu y");
        AssertClose(dgate, Down(gdg, (int)n), 1e-5f, "swiglu dgate");
        AssertClose(dup, Down(gdu, (int)n), 1e-5f, "swiglu dup");
    }

    [CudaFact]
    public void Cross_entropy_forward_and_backward_match_the_cpu_with_ignored_rows()
    {
        int n = 23, v = 1000, ignore = -100;
        float scale = 1f / 20;
        var logits = Random(n * v, 8, 5f);
        var targets = new int[n];
        for (int i = 0; i < n; i++) targets[i] = i % 7 == 3 ? ignore : i * 37 % v;
        float[] losses = new float[n], lse = new float[n], dlogits = new float[n * v];
        fixed (float* pl = logits, pls = losses, plse = lse, pd = dlogits)
        fixed (int* pt = targets)
        {
            CrossEntropyKernel.Forward(pl, pt, pls, plse, n, v, ignore);
            CrossEntropyKernel.Backward(pl, plse, pt, pd, n, v, ignore, scale);
        }
        using var b = new Buffers();
        ulong gl = b.Up(logits), gt = b.Up(targets), gls = b.Zeros(n), glse = b.Zeros(n), gd = b.Zeros(n * v);
        Launch(CudaModule.CrossEntropy, CudaKernelNames.CrossEntropyForward, CudaLaunch.PerRow(n, v), (IntPtr)(&gl), (IntPtr)(&gt), (IntPtr)(&gls), (IntPtr)(&glse), (IntPtr)(&n), (IntPtr)(&v), (IntPtr)(&ignore));
        Launch(CudaModule.CrossEntropy, CudaKernelNames.CrossEntropyBackward, CudaLaunch.CrossEntropyBackward(n, v), (IntPtr)(&gl), (IntPtr)(&glse), (IntPtr)(&gt), (IntPtr)(&gd), (IntPtr)(&n), (IntPtr)(&v), (IntPtr)(&ignore), (IntPtr)(&scale));
        AssertClose(losses, Down(gls, n), 1e-5f, "cross-entropy losses");
        AssertClose(lse, Down(glse, n), 1e-5f, "cross-entropy lse");
        AssertClose(dlogits, Down(gd, n * v), 1e-5f, "cross-entropy dlogits");
    }

    [CudaFact]
    public void Causal_gqa_attention_forward_and_backward_match_the_cpu()
    {
        int bs = 2, tq = 45, tk = 45, cap = 48, hq = 4, hkv = 2, d = 64;
        float scale = 1f / MathF.Sqrt(d);
        var q = Random(bs * tq * hq * d, 9);
        var k = Random(bs * cap * hkv * d, 10);
        var v = Random(bs * cap * hkv * d, 11);
        var dout = Random(bs * tq * hq * d, 12);
        float[] o = new float[q.Length], lse = new float[bs * hq * tq], dq = new float[q.Length], dk = new float[k.Length], dv = new float[v.Length];
        fixed (float* pq = q, pk = k, pv = v, po = o, pl = lse, pdo = dout, pdq = dq, pdk = dk, pdv = dv)
        {
            AttentionKernel.Forward(pq, pk, pv, po, pl, bs, tq, tk, cap, hq, hkv, d, scale);
            AttentionKernel.Backward(pdo, pq, pk, pv, po, pl, pdq, pdk, pdv, bs, tq, tk, cap, hq, hkv, d, scale);
        }
        using var b = new Buffers();
        ulong gq = b.Up(q), gk = b.Up(k), gv = b.Up(v), go = b.Zeros(o.Length), gl = b.Zeros(lse.Length), gdo = b.Up(dout);
        ulong gdelta = b.Zeros(lse.Length), gdq = b.Zeros(dq.Length), gdk = b.Zeros(dk.Length), gdv = b.Zeros(dv.Length);
        Launch(CudaModule.Attention, CudaKernelNames.AttentionForward, CudaLaunch.AttentionForward(bs, tq, hq, d),
            (IntPtr)(&gq), (IntPtr)(&gk), (IntPtr)(&gv), (IntPtr)(&go), (IntPtr)(&gl), (IntPtr)(&bs), (IntPtr)(&tq), (IntPtr)(&tk), (IntPtr)(&cap), (IntPtr)(&hq), (IntPtr)(&hkv), (IntPtr)(&d), (IntPtr)(&scale));
        Launch(CudaModule.Attention, CudaKernelNames.AttentionBackwardDelta, CudaLaunch.AttentionDelta(bs, tq, hq),
            (IntPtr)(&gdo), (IntPtr)(&go), (IntPtr)(&gdelta), (IntPtr)(&bs), (IntPtr)(&tq), (IntPtr)(&hq), (IntPtr)(&d));
        Launch(CudaModule.Attention, CudaKernelNames.AttentionBackwardDq, CudaLaunch.AttentionBackwardDq(bs, tq, hq, d),
            (IntPtr)(&gdo), (IntPtr)(&gq), (IntPtr)(&gk), (IntPtr)(&gv), (IntPtr)(&gl), (IntPtr)(&gdelta), (IntPtr)(&gdq), (IntPtr)(&bs), (IntPtr)(&tq), (IntPtr)(&tk), (IntPtr)(&cap), (IntPtr)(&hq), (IntPtr)(&hkv), (IntPtr)(&d), (IntPtr)(&scale));
        Launch(CudaModule.Attention, CudaKernelNames.AttentionBackwardDkDv, CudaLaunch.AttentionBackwardDkDv(bs, tk, hkv, d),
            (IntPtr)(&gdo), (IntPtr)(&gq), (IntPtr)(&gk), (IntPtr)(&gv), (IntPtr)(&gl), (IntPtr)(&gdelta), (IntPtr)(&gdk), (IntPtr)(&gdv), (IntPtr)(&bs), (IntPtr)(&tq), (IntPtr)(&tk), (IntPtr)(&cap), (IntPtr)(&hq), (IntPtr)(&hkv), (IntPtr)(&d), (IntPtr)(&scale));
        AssertClose(o, Down(go, o.Length), 1e-4f, "attention out");
        AssertClose(lse, Down(gl, lse.Length), 1e-4f, "attention lse");
        AssertClose(dq, Down(gdq, dq.Length), 1e-4f, "attention dq");
        // Rows >= tk of dk / dv are not written by either side.
        var gpuDk = Down(gdk, dk.Length);
        var gpuDv = Down(gdv, dv.Length);
        AssertClose(dk, gpuDk, 1e-4f, "attention dk");
        AssertClose(dv, gpuDv, 1e-4f, "attention dv");
    }

    [CudaFact]
    public void Nf4_and_fp4_dequantization_with_double_quant_is_bit_exact_and_the_fused_gemv_matches()
    {
        foreach (var (type, doubleQuant) in new[] { (QuantType.NF4, true), (QuantType.NF4, false), (QuantType.FP4, true) })
        {
            int rows = 96, cols = 129; // odd count: the last byte holds a spare nibble
            var weight = Random(rows * cols, 13);
            var q = QuantizedWeight.Quantize(weight, rows, cols, type, 64, doubleQuant);
            var expected = new float[rows * cols];
            q.Dequantize(expected);
            using var b = new Buffers();
            var args = new Quant4BitArgs
            {
                Packed = b.Up(q.PackedCodes.ToArray()),
                Code16 = b.Up(Codebooks.Values(type).ToArray()),
                Absmax = doubleQuant ? 0 : b.Up(q.Absmax.ToArray()),
                AbsmaxCodes = doubleQuant ? b.Up(q.AbsmaxCodes.ToArray()) : 0,
                AbsmaxScales = doubleQuant ? b.Up(q.AbsmaxScales.ToArray()) : 0,
                Map256 = doubleQuant ? b.Up(DynamicMap.Signed.ToArray()) : 0,
                Offset = q.AbsmaxOffset,
                BlockShift = 6,
            };
            long count = q.Count;
            ulong output = b.Zeros(rows * cols);
            Launch(CudaModule.Quant4Bit, CudaKernelNames.Dequant4BitF32, CudaLaunch.Elementwise((count + 1) / 2, Context.Info.Multiprocessors),
                (IntPtr)(&args), (IntPtr)(&output), (IntPtr)(&count));
            AssertClose(expected, Down(output, rows * cols), 0f, $"dequantize {type} dq={doubleQuant}");

            int xRows = 3, acc = 0;
            var x = Random(xRows * cols, 14);
            var y = new float[xRows * rows];
            for (int r = 0; r < xRows; r++)
                for (int o = 0; o < rows; o++)
                {
                    double sum = 0;
                    for (int i = 0; i < cols; i++) sum += (double)x[r * cols + i] * expected[o * cols + i];
                    y[r * rows + o] = (float)sum;
                }
            ulong gx = b.Up(x), gy = b.Zeros(y.Length);
            Launch(CudaModule.Quant4Bit, CudaKernelNames.Dequant4BitGemv, CudaLaunch.Dequant4BitGemv(rows),
                (IntPtr)(&args), (IntPtr)(&gx), (IntPtr)(&gy), (IntPtr)(&xRows), (IntPtr)(&rows), (IntPtr)(&cols), (IntPtr)(&acc));
            AssertClose(y, Down(gy, y.Length), 1e-4f, $"4-bit gemv {type}");
        }
    }

    [CudaFact]
    public void AdamW_matches_the_cpu_update()
    {
        long n = 10_000;
        var p = Random((int)n, 15);
        var g = Random((int)n, 16);
        var m = Random((int)n, 17, 0.1f);
        var v = Random((int)n, 18, 0.01f).Select(MathF.Abs).ToArray();
        float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, wd = 0.01f, bc1 = 1 - MathF.Pow(beta1, 3), bc2 = 1 - MathF.Pow(beta2, 3);
        float decay = 1f - lr * wd, stepSize = lr / bc1, invSqrtBc2 = 1f / MathF.Sqrt(bc2);
        using var b = new Buffers();
        ulong gp = b.Up(p), gg = b.Up(g), gm = b.Up(m), gv = b.Up(v);
        var ep = (float[])p.Clone();
        var em = (float[])m.Clone();
        var ev = (float[])v.Clone();
        for (int i = 0; i < n; i++)
        {
            float mi = em[i] = beta1 * em[i] + (1f - beta1) * g[i];
            float vi = ev[i] = beta2 * ev[i] + (1f - beta2) * g[i] * g[i];
            ep[i] = ep[i] * decay - stepSize * mi / (MathF.Sqrt(vi) * invSqrtBc2 + eps);
        }
        Launch(CudaModule.AdamW, CudaKernelNames.AdamW, CudaLaunch.Elementwise(n, Context.Info.Multiprocessors),
            (IntPtr)(&gp), (IntPtr)(&gg), (IntPtr)(&gm), (IntPtr)(&gv), (IntPtr)(&n), (IntPtr)(&beta1), (IntPtr)(&beta2), (IntPtr)(&eps), (IntPtr)(&decay), (IntPtr)(&stepSize), (IntPtr)(&invSqrtBc2));
        AssertClose(ep, Down(gp, (int)n), 1e-6f, "adamw p");
        AssertClose(em, Down(gm, (int)n), 1e-6f, "adamw m");
        AssertClose(ev, Down(gv, (int)n), 1e-6f, "adamw v");
    }

    /// <summary>The kernels' <c>Quant4Bit</c> struct, passed by value.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Quant4BitArgs
    {
        public ulong Packed, Code16, Absmax, AbsmaxCodes, AbsmaxScales, Map256;
        public float Offset;
        public int BlockShift;
    }
}
