using PeftGen.Backends;
using PeftGen.Backends.Cpu;
using PeftGen.Backends.Cpu.Kernels;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Cpu;

public unsafe class LinearCrossEntropyKernelTests
{
    private const int Ignore = -100;

    // Kernels travel as names: SgemmKernel is internal, and public test methods cannot take it.
    public static TheoryData<string, int, int, int> KernelsAndShapes()
    {
        var data = new TheoryData<string, int, int, int>();
        foreach (var kernel in Enum.GetValues<SgemmKernel>().Where(Sgemm.IsSupported))
        {
            data.Add(kernel.ToString(), 1, 8, 5);        // one row, one short block
            data.Add(kernel.ToString(), 45, 400, 700);   // depth split (hidden > KC), partial panels, blocks and tiles
            data.Add(kernel.ToString(), 30, 64, 3000);   // many blocks: the running max rises over the sweep
        }
        return data;
    }

    /// <summary>
    /// Per-row losses and dx = gradScale · (softmax − onehot) · W in double, from the materialised logits.
    /// </summary>
    private static (double[] Losses, double[] Dx) Reference(float[] x, float[] w, int[] targets, int n, int hidden, int vocab, float gradScale)
    {
        var losses = new double[n];
        var dx = new double[n * hidden];
        var logits = new double[vocab];
        for (int r = 0; r < n; r++)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int v = 0; v < vocab; v++)
            {
                double dot = 0;
                for (int k = 0; k < hidden; k++) dot += (double)x[r * hidden + k] * w[v * hidden + k];
                logits[v] = dot;
                max = Math.Max(max, dot);
            }
            for (int v = 0; v < vocab; v++) sum += Math.Exp(logits[v] - max);
            if (targets[r] == Ignore) continue;
            losses[r] = max + Math.Log(sum) - logits[targets[r]];
            for (int v = 0; v < vocab; v++)
            {
                double g = gradScale * (Math.Exp(logits[v] - max) / sum - (v == targets[r] ? 1 : 0));
                for (int k = 0; k < hidden; k++) dx[r * hidden + k] += g * w[v * hidden + k];
            }
        }
        return (losses, dx);
    }

    [Theory]
    [MemberData(nameof(KernelsAndShapes))]
    public void Losses_and_input_gradient_match_the_materialised_logits(string kernelName, int n, int hidden, int vocab)
    {
        var kernel = Enum.Parse<SgemmKernel>(kernelName);
        var rng = new Random(n * 7 + hidden * 3 + vocab);
        var x = KernelCheck.Random(rng, n * hidden, 1f);
        var w = KernelCheck.Random(rng, vocab * hidden, 0.3f);
        // Rows later in the vocabulary are longer, so their logits tend to be larger and the running max keeps rising.
        for (int v = 0; v < vocab; v++)
            for (int k = 0; k < hidden; k++) w[v * hidden + k] *= 1f + 2f * v / vocab;
        var targets = Enumerable.Range(0, n).Select(r => r % 4 == 3 ? Ignore : rng.Next(vocab)).ToArray();
        const float gradScale = 0.37f;
        var (refLosses, refDx) = Reference(x, w, targets, n, hidden, vocab, gradScale);

        var losses = new float[n];
        var lossesOnly = new float[n];
        var dx = Enumerable.Repeat(float.NaN, n * hidden).ToArray(); // every element must be written
        fixed (float* px = x, pw = w, pl = losses, plo = lossesOnly, pdx = dx)
        fixed (int* pt = targets)
        {
            var head = new HeadWeight(pw, vocab, hidden);
            LinearCrossEntropyKernel.Run(kernel, px, head, pt, n, Ignore, pl, pdx, gradScale);
            LinearCrossEntropyKernel.Run(kernel, px, head, pt, n, Ignore, plo, null, gradScale);
        }
        KernelCheck.Close(losses, refLosses, 2e-5, $"{kernelName} losses");
        KernelCheck.Close(dx, refDx, 2e-5, $"{kernelName} dx");
        Assert.Equal(losses, lossesOnly);
        for (int r = 0; r < n; r++)
            if (targets[r] == Ignore) Assert.All(dx.Skip(r * hidden).Take(hidden), value => Assert.Equal(0f, value));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 1)]
    [InlineData(1, 3)]
    [InlineData(2, 4)]
    public void Every_worker_grid_gives_the_same_result(int rowParts, int vocabParts)
    {
        // Rows split into panels, the vocabulary into parts whose running states are merged at the end.
        int n = 50, hidden = 72, vocab = 1100;
        var rng = new Random(3);
        var x = KernelCheck.Random(rng, n * hidden, 1f);
        var w = KernelCheck.Random(rng, vocab * hidden, 0.5f);
        var targets = Enumerable.Range(0, n).Select(r => r % 7 == 2 ? Ignore : rng.Next(vocab)).ToArray();
        var (refLosses, refDx) = Reference(x, w, targets, n, hidden, vocab, 0.25f);
        var losses = new float[n];
        var dx = new float[n * hidden];
        fixed (float* px = x, pw = w, pl = losses, pdx = dx)
        fixed (int* pt = targets)
            LinearCrossEntropyKernel.Run(Sgemm.BestKernel, px, new HeadWeight(pw, vocab, hidden), pt, n, Ignore, pl, pdx, 0.25f, (rowParts, vocabParts));
        KernelCheck.Close(losses, refLosses, 2e-5, $"{rowParts} x {vocabParts} losses");
        KernelCheck.Close(dx, refDx, 2e-5, $"{rowParts} x {vocabParts} dx");
    }

    [Fact]
    public void Many_rows_split_by_rows_and_few_rows_split_the_vocabulary()
    {
        // stories15M at 8 × 256 tokens on 2 threads: each thread packs the whole head, which is cheap next to its products.
        Assert.Equal((2, 1), LinearCrossEntropyKernel.PlanThreads(2048, 288, 32000, 14, dense: true, gradient: true, threads: 2));
        // A 1B-class bf16 head on one 256-token sequence over 16 threads: packing the whole head per thread would dominate.
        var (rowParts, vocabParts) = LinearCrossEntropyKernel.PlanThreads(256, 2048, 32000, 14, dense: false, gradient: true, threads: 16);
        Assert.True(vocabParts >= 4 && rowParts * vocabParts <= 16, $"{rowParts} x {vocabParts}");
    }

    [Fact]
    public void The_memory_model_counts_every_workers_packed_blocks()
    {
        // A 1B-class bf16 head at 256 tokens on 2 threads: two workers, each with two packed 256-row blocks of a
        // 2,048-wide head and the block widened from bf16 (6 MiB), plus its packed tokens.
        long bytes = LinearCrossEntropyKernel.WorkspaceBytes(256, 2048, 32000, dense: false, threads: 2);
        Assert.InRange(bytes, 2 * 3 * 256 * 2048 * 4L, 32L << 20);
        Assert.True(LinearCrossEntropyKernel.WorkspaceBytes(256, 2048, 32000, dense: true, threads: 2) < bytes, "a float32 head needs no widened block");
    }

    [Fact]
    public void A_16_bit_head_is_widened_block_by_block()
    {
        int n = 20, hidden = 48, vocab = 1000;
        var rng = new Random(5);
        var x = KernelCheck.Random(rng, n * hidden, 1f);
        var bits = KernelCheck.Random(rng, vocab * hidden, 0.5f).Select(BitConverter.SingleToUInt32Bits).Select(b => (ushort)(b >> 16)).ToArray();
        var w = bits.Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16)).ToArray(); // the same bf16 values, widened
        var targets = Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
        var (refLosses, refDx) = Reference(x, w, targets, n, hidden, vocab, 1f);

        var losses = new float[n];
        var dx = new float[n * hidden];
        fixed (float* px = x, pl = losses, pdx = dx)
        fixed (ushort* pb = bits)
        fixed (int* pt = targets)
        {
            var head = new HeadWeight(new Float16TileSource(pb, vocab, hidden, DType.BFloat16));
            LinearCrossEntropyKernel.Run(px, head, pt, n, Ignore, pl, pdx, 1f);
        }
        KernelCheck.Close(losses, refLosses, 2e-5, "bf16 losses");
        KernelCheck.Close(dx, refDx, 2e-5, "bf16 dx");
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void The_cpu_backend_agrees_with_the_materialising_default_other_backends_take(DType weightType)
    {
        // IBackend's default (CUDA's route) against the CPU's fused kernel, through the public tensor types.
        int n = 33, hidden = 40, vocab = 900;
        var random = new Random(9);
        using var scope = TensorScope.Begin();
        var x = Tensor.RandN([n, hidden], random);
        var weight = Tensor.RandN([vocab, hidden], random, 0.4f).To(weightType);
        var targets = Enumerable.Range(0, n).Select(i => i % 6 == 0 ? Ignore : random.Next(vocab)).ToArray();
        var backend = Backend.Of(x);
        var (losses, dx, expectedLosses, expectedDx) = (Tensor.Empty([n]), Tensor.Empty([n, hidden]), Tensor.Empty([n]), Tensor.Empty([n, hidden]));
        backend.LinearCrossEntropy(x, weight, targets, Ignore, losses, dx, 0.5f);
        IBackend.MaterialisedLinearCrossEntropy(backend, x, weight, targets, Ignore, expectedLosses, expectedDx, 0.5f);
        KernelCheck.Close(losses.ToArray(), KernelCheck.ToDouble(expectedLosses.ToArray()), 2e-5, $"{weightType} losses");
        KernelCheck.Close(dx.ToArray(), KernelCheck.ToDouble(expectedDx.ToArray()), 2e-5, $"{weightType} dx");
        IBackend.MaterialisedLinearCrossEntropy(backend, x, weight, targets, Ignore, expectedLosses, null, 0.5f);
        KernelCheck.Close(losses.ToArray(), KernelCheck.ToDouble(expectedLosses.ToArray()), 2e-5, $"{weightType} losses without a gradient");
    }

    [Fact]
    public void A_target_outside_the_vocabulary_is_named()
    {
        var x = new float[4];
        var w = new float[12];
        var losses = new float[1];
        int[] targets = [3];
        var error = Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            fixed (float* px = x, pw = w, pl = losses)
            fixed (int* pt = targets)
                LinearCrossEntropyKernel.Run(px, new HeadWeight(pw, 3, 4), pt, 1, Ignore, pl, null, 1f);
        });
        Assert.Contains("targets[0] = 3", error.Message);
    }
}
