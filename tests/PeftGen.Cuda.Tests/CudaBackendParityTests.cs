using PeftGen.Autograd;
using PeftGen.Backends;
using PeftGen.Backends.Cuda;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Optim;
using PeftGen.Quantization;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>
/// <see cref="CudaBackend"/> through <see cref="Ops"/> and the optimizers, against the same computation on the CPU: every
/// test builds the graph twice, once on CUDA tensors. Skipped where no CUDA device is present. Tolerances:
/// max |gpu − cpu| ≤ tol · (1 + max |cpu|), tol 1e-5 for kernels without GEMMs, 1e-4 for float32 GEMMs, 3e-2 for bf16
/// tensor-core GEMMs (8 bits of mantissa) and the QLoRA step.
/// </summary>
public sealed class CudaBackendParityTests
{
    private static readonly Device Gpu = new(DeviceType.Cuda, 0);

    private static Tensor Rand(int seed, params int[] shape) => Tensor.RandN(shape, new Random(seed), 0.5f);

    private static void AssertClose(Tensor expected, Tensor actual, float tolerance, string what)
    {
        Assert.Equal(Device.Cpu, expected.Device);
        Assert.Equal(Gpu, actual.Device);
        AssertClose(expected.ToArray(), actual.ToArray(), tolerance, what);
    }

    private static void AssertClose(float[] e, float[] a, float tolerance, string what)
    {
        Assert.Equal(e.Length, a.Length);
        float worst = 0, magnitude = 0;
        for (int i = 0; i < e.Length; i++)
        {
            magnitude = MathF.Max(magnitude, MathF.Abs(e[i]));
            float error = MathF.Abs(e[i] - a[i]);
            if (!(error <= worst)) worst = error;
        }
        Assert.True(worst <= tolerance * (1 + magnitude), $"{what}: largest error {worst:E3} (tolerance {tolerance * (1 + magnitude):E3})");
    }

    /// <summary>A leaf that requires gradients, on <paramref name="device"/>.</summary>
    private static Tensor Leaf(Tensor cpu, Device device)
    {
        var t = cpu.To(device);
        if (ReferenceEquals(t, cpu)) t = Tensor.FromArray(cpu.ToArray(), cpu.ShapeArray);
        t.RequiresGrad = true;
        return t;
    }

    [CudaFact]
    public void Tensors_round_trip_to_the_device_and_move_in_place()
    {
        using var x = Rand(1, 3, 5);
        using (var d = x.To(Gpu))
        {
            Assert.Equal(Gpu, d.Device);
            Assert.Equal(x.ToArray(), d.ToArray());
            using var back = d.To(Device.Cpu);
            Assert.Equal(x.ToArray(), back.ToArray());
            using var scope = TensorScope.Begin();
            Assert.Equal(x.Transpose(0, 1).ToArray(), d.Transpose(0, 1).ToArray()); // strided device view read back
        }
        using var moved = Tensor.FromArray(x.ToArray(), 3, 5);
        moved.MoveTo(Gpu);
        Assert.Equal(Gpu, moved.Device);
        Assert.Equal(x.ToArray(), moved.ToArray());
        using var host = Tensor.Zeros(3, 5);
        host.CopyFrom(moved);
        Assert.Equal(x.ToArray(), host.ToArray());
    }

    [CudaFact]
    public void Elementwise_softmax_and_reductions_match_the_cpu_forward_and_backward()
    {
        using var a0 = Rand(2, 4, 6, 8);
        using var b0 = Rand(3, 8);
        using var c0 = Rand(4, 4, 6, 8);
        using var v0 = Rand(5, 8);
        var results = new Dictionary<Device, (float[] Y, float Loss, float[] Ga, float[] Gb, float[] Gc, float[] Gv)>();
        foreach (var device in new[] { Device.Cpu, Gpu })
        {
            using var scope = TensorScope.Begin();
            var a = Leaf(a0, device);
            var b = Leaf(b0, device);
            var c = Leaf(c0, device);
            var v = Leaf(v0, device);
            var h = Ops.Add(a, b, alpha: 0.5f, beta: -2f);                       // bias broadcast
            h = Ops.Mul(h, c) + Ops.Scale(a, 3f);
            h = Ops.MulChannels(Ops.Silu(h), v);
            var s = Ops.Softmax(h.Permute(0, 2, 1).Contiguous());                  // [4, 8, 6], strided copy first
            var cat = Ops.Concat([s, s.Slice(2, 1, 3)], 2);                         // [4, 8, 9]
            var loss = Ops.Mean(Ops.Mul(cat, cat)) + Ops.Sum(cat);
            loss.Backward();
            results[device] = (cat.ToArray(), loss.Item(), a.Grad!.ToArray(), b.Grad!.ToArray(), c.Grad!.ToArray(), v.Grad!.ToArray());
            foreach (var t in new[] { a, b, c, v }) t.Dispose();
        }
        var (cpu, gpu) = (results[Device.Cpu], results[Gpu]);
        AssertClose(cpu.Y, gpu.Y, 1e-5f, "forward");
        AssertClose([cpu.Loss], [gpu.Loss], 1e-5f, "loss (sum, mean)");
        AssertClose(cpu.Ga, gpu.Ga, 1e-5f, "grad a");
        AssertClose(cpu.Gb, gpu.Gb, 1e-5f, "grad b (column sums)");
        AssertClose(cpu.Gc, gpu.Gc, 1e-5f, "grad c");
        AssertClose(cpu.Gv, gpu.Gv, 1e-5f, "grad v (sum of rows of products)");
    }

    [CudaFact]
    public void Linear_and_batched_matmul_match_the_cpu_in_float32_and_bf16()
    {
        var backend = CudaBackend.For(Gpu);
        var saved = backend.GemmPrecision;
        try
        {
            foreach (var (precision, tolerance) in new[] { (CudaGemmPrecision.Float32, 1e-4f), (CudaGemmPrecision.Bf16, 3e-2f) })
            {
                backend.GemmPrecision = precision;
                using var x0 = Rand(6, 2, 9, 33);
                using var w0 = Rand(7, 17, 33);
                using var q0 = Rand(8, 2, 3, 9, 16);
                var outputs = new Dictionary<Device, float[][]>();
                foreach (var device in new[] { Device.Cpu, Gpu })
                {
                    using var scope = TensorScope.Begin();
                    var x = Leaf(x0, device);
                    var w = Leaf(w0, device);
                    var q = Leaf(q0, device);
                    var y = Ops.Linear(x, w);                                               // [2, 9, 17]
                    var scores = Ops.MatMul(q, q.Transpose(-1, -2));                        // [2, 3, 9, 9], transposed view in place
                    var loss = Ops.Sum(Ops.Mul(y, y)) + Ops.Mean(scores);
                    loss.Backward();
                    outputs[device] = [y.ToArray(), scores.ToArray(), x.Grad!.ToArray(), w.Grad!.ToArray(), q.Grad!.ToArray()];
                    foreach (var t in new[] { x, w, q }) t.Dispose();
                }
                string[] names = ["linear y", "matmul", "dx", "dW", "dq"];
                for (int i = 0; i < names.Length; i++)
                    AssertClose(outputs[Device.Cpu][i], outputs[Gpu][i], tolerance, $"{names[i]} ({precision})");
            }
        }
        finally
        {
            backend.GemmPrecision = saved;
        }
    }

    [CudaFact]
    public void Linear4bit_forward_and_input_gradient_match_the_cpu_for_few_and_many_rows()
    {
        using var w = Rand(9, 48, 64);
        var q = QuantizedWeight.Quantize(w.ToArray(), 48, 64, QuantType.NF4, 64, doubleQuant: true);
        foreach (int rows in new[] { 3, 40 })
        {
            using var x0 = Rand(10 + rows, rows, 64);
            var outputs = new Dictionary<Device, float[][]>();
            foreach (var device in new[] { Device.Cpu, Gpu })
            {
                using var scope = TensorScope.Begin();
                var x = Leaf(x0, device);
                var y = Ops.Linear4Bit(x, q);
                Ops.Sum(Ops.Mul(y, y)).Backward();
                outputs[device] = [y.ToArray(), x.Grad!.ToArray()];
                x.Dispose();
            }
            // Few rows: the fused float32 GEMV. Many: bf16 dequantization and a bf16 GEMM.
            float tolerance = rows <= CudaLaunch.GemvMaxRows ? 1e-4f : 3e-2f;
            AssertClose(outputs[Device.Cpu][0], outputs[Gpu][0], tolerance, $"4-bit y, {rows} rows");
            AssertClose(outputs[Device.Cpu][1], outputs[Gpu][1], 3e-2f, $"4-bit dx, {rows} rows");
        }
        Assert.True(CudaBackend.For(Gpu).Evict(q));
    }

    [CudaFact]
    public void Linear_and_embedding_on_16bit_weights_match_the_cpu_and_keep_their_dtype_on_the_device()
    {
        foreach (var dtype in new[] { DType.BFloat16, DType.Float16 })
        {
            using var w0 = Rand(11, 48, 64);
            using var w16 = w0.To(dtype);                                                   // [out, in] 16-bit on the host
            using var table = Rand(12, 20, 64).To(dtype);                                   // [vocab, dim] 16-bit
            foreach (int rows in new[] { 1, 40 })
            {
                using var x0 = Rand(13 + rows, rows, 64);
                using var b0 = Rand(14, 48);
                var outputs = new Dictionary<Device, float[][]>();
                foreach (var device in new[] { Device.Cpu, Gpu })
                {
                    using var scope = TensorScope.Begin();
                    var w = w16.To(device);
                    Assert.Equal(dtype, w.DType);
                    var x = Leaf(x0, device);
                    var bias = Leaf(b0, device);
                    var y = Ops.Linear(x, w, bias);
                    Ops.Sum(Ops.Mul(y, y)).Backward();
                    var e = Ops.Embedding(table.To(device), [3, 19, 0, 3], 2, 2);
                    var wide = w.To(DType.Float32);                                           // conversions on the device
                    var back = wide.To(dtype);
                    outputs[device] = [y.ToArray(), x.Grad!.ToArray(), bias.Grad!.ToArray(), e.ToArray(), wide.ToArray(), back.ToArray()];
                    x.Dispose();
                    bias.Dispose();
                }
                // The GPU multiplies bf16 × bf16 (an fp16 weight rounded to bf16, x rounded too) with float32 accumulation.
                AssertClose(outputs[Device.Cpu][0], outputs[Gpu][0], 3e-2f, $"{dtype} y, {rows} rows");
                AssertClose(outputs[Device.Cpu][1], outputs[Gpu][1], 3e-2f, $"{dtype} dx, {rows} rows");
                AssertClose(outputs[Device.Cpu][2], outputs[Gpu][2], 3e-2f, $"{dtype} dbias, {rows} rows");
                for (int i = 3; i < 6; i++) Assert.Equal(outputs[Device.Cpu][i], outputs[Gpu][i]);   // lookups and conversions are exact
            }
            using var moved = w0.To(dtype);
            moved.MoveTo(Gpu);
            Assert.Equal(dtype, moved.DType);
            Assert.Equal(w16.ToArray(), moved.ToArray());
        }
    }

    [CudaFact]
    public void Multi_tensor_and_8bit_adamw_match_the_cpu_over_three_steps()
    {
        foreach (bool eightBit in new[] { false, true })
        {
            var finals = new Dictionary<Device, float[][]>();
            foreach (var device in new[] { Device.Cpu, Gpu })
            {
                var ps = new[] { Rand(20, 10_000), Rand(21, 64, 96), Rand(22, 100) }; // the last stays float32 in AdamW8bit
                foreach (var p in ps)
                {
                    p.MoveTo(device);
                    p.RequiresGrad = true;
                }
                using IOptimizer optimizer = eightBit ? new AdamW8bit(ps, 1e-2f, weightDecay: 0.01f) : new AdamW(ps, 1e-2f, weightDecay: 0.01f);
                for (int step = 0; step < 3; step++)
                {
                    for (int i = 0; i < ps.Length; i++)
                    {
                        ps[i].ZeroGrad();
                        using var g = Tensor.RandN(ps[i].ShapeArray, new Random(100 * step + i));
                        ps[i].Grad = Tensor.Create(ps[i].ShapeArray, DType.Float32, zeroed: false, scoped: false, device: device).CopyFrom(g);
                    }
                    optimizer.Step();
                }
                finals[device] = ps.Select(p => p.ToArray()).ToArray();
                foreach (var p in ps) p.Dispose();
            }
            for (int i = 0; i < 3; i++)
                AssertClose(finals[Device.Cpu][i], finals[Gpu][i], 1e-5f, $"{(eightBit ? "AdamW8bit" : "AdamW multi-tensor")} parameter {i}");
        }
    }

    [CudaFact]
    public void A_qlora_training_step_matches_the_cpu_over_several_steps()
    {
        var config = new LlamaConfig
        {
            HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            VocabSize = 256, MaxPositionEmbeddings = 32, RmsNormEps = 1e-5f, TieWordEmbeddings = true,
        };
        int batch = 2, seq = 16;
        var random = new Random(3);
        var inputs = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        var targets = Enumerable.Range(0, batch * seq).Select(i => i % 5 == 0 ? -100 : random.Next(config.VocabSize)).ToArray();
        var losses = new Dictionary<Device, List<float>>();
        var logits = new Dictionary<Device, float[]>();
        foreach (var device in new[] { Device.Cpu, Gpu })
        {
            using var model = new LlamaForCausalLM(config, seed: 1);
            var peft = PeftModel.Create(model, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear, Init = LoRAInit.Gaussian },
                new QuantizationConfig(QuantType.NF4, DoubleQuant: true, BlockSize: 64));
            foreach (var (_, p) in model.NamedParameters()) p.MoveTo(device);
            using var optimizer = new AdamW(peft.TrainableParameters(), 1e-2f, weightDecay: 0f);
            var list = losses[device] = [];
            for (int step = 0; step < 4; step++)
            {
                using (TensorScope.Begin())
                {
                    var loss = model.Loss(inputs, targets, batch, seq);
                    list.Add(loss.Item());
                    loss.Backward();
                }
                optimizer.Step();
                optimizer.ZeroGrad();
            }
            using (TensorScope.Begin())
            using (GradMode.Disable())
                logits[device] = model.Forward(inputs, batch, seq).ToArray(); // the trained adapter's final logits
        }
        // Stated tolerances: per-step losses within 3e-2·(1 + max |loss|) (bf16 tensor-core GEMMs on the GPU, float32 on
        // the CPU, over four AdamW steps), final logits within 5e-2·(1 + max |logit|).
        AssertClose(losses[Device.Cpu].ToArray(), losses[Gpu].ToArray(), 3e-2f,
            $"QLoRA losses cpu [{string.Join(", ", losses[Device.Cpu])}] vs gpu [{string.Join(", ", losses[Gpu])}]");
        Assert.True(losses[Gpu][^1] < losses[Gpu][0], "the GPU loss must fall over the steps");
        AssertClose(logits[Device.Cpu], logits[Gpu], 5e-2f, "QLoRA final logits after four steps");
    }

    [CudaFact]
    public void Dropout_masks_drawn_on_the_gpu_are_the_host_reference_and_one_draw_of_the_run_generator()
    {
        const int N = 100_003;
        const float P = 0.1f;
        var rng = new Rng(7);
        var copy = new Rng(7);
        using var x = Tensor.FromArray(Enumerable.Repeat(1f, N).ToArray(), [N]).To(Gpu);
        using var y = Ops.Dropout(x, P, rng);
        var expected = new float[N];
        CudaDropout.Fill(expected, P, 1f / (1f - P), copy.NextUInt64());
        Assert.Equal(copy.State, rng.State);
        Assert.Equal(expected, y.ToArray());
    }

    [CudaFact]
    public void Cross_entropy_over_more_than_65535_tokens_matches_the_cpu()
    {
        const int Rows = 70_000, Vocab = 40;
        var random = new Random(11);
        var targets = Enumerable.Range(0, Rows).Select(i => i % 97 == 0 ? -100 : random.Next(Vocab)).ToArray();
        using var cpuLogits = Rand(12, Rows, Vocab);
        using var gpuLogits = Leaf(cpuLogits, Gpu);
        using var cpuLeaf = Leaf(cpuLogits, Device.Cpu);
        using var cpuLoss = Ops.CrossEntropy(cpuLeaf, targets);
        using var gpuLoss = Ops.CrossEntropy(gpuLogits, targets);
        AssertClose([cpuLoss.Item()], [gpuLoss.Item()], 1e-4f, "loss");
        cpuLoss.Backward();
        gpuLoss.Backward();
        AssertClose(cpuLeaf.Grad!, gpuLogits.Grad!, 1e-5f, "dlogits of the rows past 65,535 too");
    }
}
