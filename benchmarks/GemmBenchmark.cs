using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftGen.Backends.Cpu;
using PeftGen.Backends.Cpu.Kernels;
using PeftGen.Tensors;

namespace PeftGen.Benchmarks;

/// <summary>
/// SGEMM GFLOP/s of <see cref="Sgemm"/> against OpenBLAS on 2 threads: the 1024³ and 2048³
/// headline squares, then the shapes a stories15M-sized LoRA training step actually runs; then
/// the frozen 16-bit (bf16, fp16) linear layer's forward and input gradient against float32 SGEMM
/// of the same shape (the "linear16_*" shapes: the tiled kernel widens W a tile at a time).
/// Usage: <c>gemm [--seconds S] [--shape NAME] [--kernel Avx512|Avx2|Portable]</c>: S = time budget
/// per shape and library (default 1.5); NAME runs only the shapes whose name contains it; the
/// kernel defaults to the best this CPU supports (the 16-bit shapes always run on it).
/// OpenBLAS runs on the core it detects itself (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are cleared
/// before it loads, see <see cref="OpenBlas"/>); each peer line names that core as "peer_core".
/// </summary>
internal static unsafe class GemmBenchmark
{
    private const int Threads = 2;

    private readonly record struct Shape(string Name, int M, int N, int K, bool TransA, bool TransB, float Beta = 0f);

    private static readonly Shape[] s_shapes =
    [
        new("square_1024", 1024, 1024, 1024, false, false),
        new("square_2048", 2048, 2048, 2048, false, false),
        // y[N, out] = x[N, in] · W[out, in]ᵀ: a 288 -> 768 linear on 2048 tokens.
        new("linear_forward", 2048, 768, 288, false, true),
        // dW[out, in] = dyᵀ · x summed over 2048 tokens.
        new("linear_weight_grad", 288, 768, 2048, true, false),
        // logits[N, vocab] = x[N, 288] · Wᵀ with a 32000-token vocabulary.
        new("lm_head_forward", 2048, 32000, 288, false, true),
        // dx[N, 288] = dlogits[N, vocab] · W: the head's input gradient.
        new("lm_head_input_grad", 2048, 288, 32000, false, false),
        // dx[N, in] = dy[N, out] · W[out, in]: a 768 -> 288 input gradient.
        new("linear_input_grad", 2048, 288, 768, false, false),
        // The six GEMMs of one LoRA layer per step, rank 8 on a 768-wide side (rows = 2048 tokens,
        // x [rows, in], A [r, in], B [out, r], g = dy [rows, out], h and dh [rows, r]):
        // forward h = x · Aᵀ, y += h · Bᵀ; backward dB = gᵀ · h, dh = g · B, dA = dhᵀ · x, dx += dh · A.
        new("lora_down_forward", 2048, 8, 768, false, true),
        new("lora_up_forward", 2048, 768, 8, false, true),
        new("lora_b_grad", 768, 8, 2048, true, false),
        new("lora_dh", 2048, 8, 768, false, false),
        new("lora_a_grad", 8, 768, 2048, true, false),
        new("lora_dx", 2048, 768, 8, false, false, Beta: 1f),
        // The same at rank 16.
        new("lora_r16_down_forward", 2048, 16, 768, false, true),
        new("lora_r16_up_forward", 2048, 768, 16, false, true, Beta: 1f),
        new("lora_r16_b_grad", 768, 16, 2048, true, false),
        new("lora_r16_dh", 2048, 16, 768, false, false),
        new("lora_r16_a_grad", 16, 768, 2048, true, false),
        new("lora_r16_dx", 2048, 768, 16, false, false, Beta: 1f),
        // Rank 8 on the 288-wide attention projections.
        new("lora_288_down_forward", 2048, 8, 288, false, true),
        new("lora_288_a_grad", 8, 288, 2048, true, false),
        new("lora_288_dx", 2048, 288, 8, false, false, Beta: 1f),
    ];

    /// <summary>A linear layer y [Rows, Out] = x [Rows, In] · W [Out, In]ᵀ, timed with a 16-bit W against a float32 one.</summary>
    private readonly record struct LinearShape(string Name, int Rows, int In, int Out);

    private static readonly LinearShape[] s_linear16Shapes =
    [
        // A 1B-class model's MLP up/gate projection and attention projection on 512 tokens.
        new("linear16_mlp", 512, 2048, 5632),
        new("linear16_attention", 512, 2048, 2048),
        // Token-by-token generation: one row, the GEMV paths.
        new("linear16_mlp_one_row", 1, 2048, 5632),
    ];

    public static int Run(string[] args)
    {
        double seconds = 1.5;
        string filter = "";
        var kernel = Sgemm.BestKernel;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--seconds" && i + 1 < args.Length && double.TryParse(args[i + 1], out seconds)) i++;
            else if (args[i] == "--shape" && i + 1 < args.Length) filter = args[++i];
            else if (args[i] == "--kernel" && i + 1 < args.Length && Enum.TryParse(args[i + 1], out kernel) && Sgemm.IsSupported(kernel)) i++;
            else
            {
                Console.Error.WriteLine("usage: gemm [--seconds S] [--shape NAME] [--kernel Avx512|Avx2|Portable]");
                return 2;
            }
        }

        CpuParallel.MaxThreads = Threads;
        bool havePeer = OpenBlas.TryLoad();
        if (havePeer)
        {
            OpenBlas.SetNumThreads(Threads);
            Console.Error.WriteLine($"gemm: OpenBLAS peer core {OpenBlas.CoreName ?? "unknown"} ({OpenBlas.Config ?? "openblas_get_config not exported"})");
        }
        else
            Console.Error.WriteLine("gemm: libopenblas.so.0 not found, reporting without a peer (apt-get install libopenblas0-pthread)");
        Console.Error.WriteLine($"gemm: kernel {kernel}, {Threads} threads, {seconds:0.##} s per shape and library");

        foreach (var shape in s_shapes.Where(candidate => candidate.Name.Contains(filter, StringComparison.Ordinal)))
            RunShape(shape, kernel, havePeer, seconds);
        foreach (var shape in s_linear16Shapes.Where(candidate => candidate.Name.Contains(filter, StringComparison.Ordinal)))
            foreach (var dtype in new[] { DType.BFloat16, DType.Float16 })
                RunLinear16(shape, dtype, seconds);
        foreach (var shape in s_headShapes.Where(candidate => candidate.Name.Contains(filter, StringComparison.Ordinal)))
            RunHeadLoss(shape, seconds);
        return 0;
    }

    /// <summary>An output head and loss: x [Rows, Hidden], W [Vocab, Hidden] stored as <see cref="WeightType"/>.</summary>
    private readonly record struct HeadShape(string Name, int Rows, int Hidden, int Vocab, DType WeightType);

    private static readonly HeadShape[] s_headShapes =
    [
        // stories15M at 8 × 256 tokens, its float32 tied embedding as the head.
        new("head_loss", 2048, 288, 32000, DType.Float32),
        // A 1B-class model (TinyLlama: hidden 2048, a bf16 head) on one 256-token sequence: few rows per thread.
        new("head_loss_1b_256", 256, 2048, 32000, DType.BFloat16),
        new("head_loss_1b_2048", 2048, 2048, 32000, DType.BFloat16),
    ];

    /// <summary>
    /// An output head and loss with the input gradient: <see cref="LinearCrossEntropyKernel"/>, which never stores the
    /// logits, against the unfused route (logits GEMM, <see cref="CrossEntropyKernel.ForwardWithGradient"/> in place,
    /// input-gradient GEMM; the tiled 16-bit kernels for a bf16 head), calls interleaved.
    /// </summary>
    private static void RunHeadLoss(HeadShape s, double seconds)
    {
        int n = s.Rows, hidden = s.Hidden, vocab = s.Vocab;
        bool narrow = s.WeightType != DType.Float32;
        float* x = Allocate((long)n * hidden, seed: 1);
        float* w = Allocate((long)vocab * hidden, seed: 2);
        var w16 = narrow ? (ushort*)NativeMemory.AlignedAlloc((nuint)((long)vocab * hidden * sizeof(ushort)), 64) : null;
        float* logits = Allocate((long)n * vocab, seed: 3);
        float* losses = Allocate(n, seed: 4), fusedLosses = Allocate(n, seed: 4);
        float* dx = Allocate((long)n * hidden, seed: 5), fusedDx = Allocate((long)n * hidden, seed: 5);
        var targets = new int[n];
        var random = new Random(6);
        for (int i = 0; i < n; i++) targets[i] = random.Next(vocab);
        try
        {
            if (narrow) Float16Conversions.Narrow(new ReadOnlySpan<float>(w, vocab * hidden), new Span<ushort>(w16, vocab * hidden), s.WeightType);
            var source = narrow ? new Float16TileSource(w16, vocab, hidden, s.WeightType) : default;
            var head = narrow ? new HeadWeight(source) : new HeadWeight(w, vocab, hidden);
            fixed (int* t = targets)
            {
                int* pt = t;
                float scale = 1f / n;
                Console.Error.WriteLine($"gemm: {s.Name} x [{n}, {hidden}], W [{vocab}, {hidden}] {s.WeightType} warming up");
                Action unfused = () =>
                {
                    if (narrow) TiledWeightMatMulKernel.Forward(x, source, logits, n);
                    else Sgemm.Multiply(false, true, n, vocab, hidden, 1f, x, hidden, w, hidden, 0f, logits, vocab);
                    CrossEntropyKernel.ForwardWithGradient(logits, pt, losses, n, vocab, -100, scale);
                    if (narrow) TiledWeightMatMulKernel.BackwardInput(logits, source, dx, n, accumulate: false);
                    else Sgemm.Multiply(false, false, n, hidden, vocab, 1f, logits, vocab, w, hidden, 0f, dx, hidden);
                };
                Action fused = () => LinearCrossEntropyKernel.Run(x, head, pt, n, -100, fusedLosses, fusedDx, scale);
                var (unfusedBest, fusedBest, calls) = Interleaved(unfused, fused, seconds);
                double dxDiff = MaxRelativeDiff(fusedDx, dx, (long)n * hidden)(), lossDiff = MaxRelativeDiff(fusedLosses, losses, n)();
                Console.Error.WriteLine($"gemm: {s.Name} {calls} calls, unfused {unfusedBest * 1e3:F1} ms, fused {fusedBest * 1e3:F1} ms");
                Console.Out.WriteLine(new JsonObject
                {
                    ["name"] = s.Name, ["rows"] = n, ["hidden"] = hidden, ["vocab"] = vocab, ["weight"] = narrow ? "bf16" : "float32",
                    ["fused_ms"] = Math.Round(fusedBest * 1e3, 1),
                    ["unfused_ms"] = Math.Round(unfusedBest * 1e3, 1),
                    ["fused_gflops"] = Math.Round(4.0 * n * hidden * vocab / fusedBest / 1e9, 1),
                    ["ratio"] = Math.Round(unfusedBest / fusedBest, 3),
                    ["max_rel_diff_dx"] = dxDiff,
                    ["max_rel_diff_loss"] = lossDiff,
                    ["threads"] = Threads,
                }.ToJsonString());
            }
        }
        finally
        {
            foreach (var buffer in new[] { x, w, logits, losses, fusedLosses, dx, fusedDx }) NativeMemory.AlignedFree(buffer);
            if (w16 != null) NativeMemory.AlignedFree(w16);
        }
    }

    /// <summary>
    /// Forward and input gradient of a frozen 16-bit linear layer against float32 SGEMM on the same weight widened, calls
    /// interleaved (best of each kept), as two JSON lines: GFLOP/s of each and their ratio (16-bit / float32).
    /// </summary>
    private static void RunLinear16(LinearShape s, DType dtype, double seconds)
    {
        long xCount = (long)s.Rows * s.In, wCount = (long)s.Out * s.In, yCount = (long)s.Rows * s.Out;
        float* x = Allocate(xCount, seed: 1);
        float* w = Allocate(wCount, seed: 2);                                                  // [out, in], then the widened 16-bit values
        float* dy = Allocate(yCount, seed: 3);
        float* y = Allocate(yCount, seed: 4), y16 = Allocate(yCount, seed: 4);
        float* dx = Allocate(xCount, seed: 5), dx16 = Allocate(xCount, seed: 5);
        var w16 = (ushort*)NativeMemory.AlignedAlloc((nuint)(wCount * sizeof(ushort)), 64);  // [out, in] 16-bit
        try
        {
            var wide = new Span<float>(w, checked((int)wCount));
            Float16Conversions.Narrow(wide, new Span<ushort>(w16, wide.Length), dtype);
            Float16Conversions.Widen(new ReadOnlySpan<ushort>(w16, wide.Length), wide, dtype); // float32 gets exactly the 16-bit values
            var source = new Float16TileSource(w16, s.Out, s.In, dtype);
            Console.Error.WriteLine($"gemm: {s.Name} {dtype} x [{s.Rows}, {s.In}] · W [{s.Out}, {s.In}]ᵀ warming up");
            MeasureLinear16(s, dtype, "forward", seconds,
                () => Sgemm.Multiply(false, true, s.Rows, s.Out, s.In, 1f, x, s.In, w, s.In, 0f, y, s.Out),
                () => TiledWeightMatMulKernel.Forward(x, source, y16, s.Rows),
                MaxRelativeDiff(y16, y, yCount));
            MeasureLinear16(s, dtype, "backward_input", seconds,
                () => Sgemm.Multiply(false, false, s.Rows, s.In, s.Out, 1f, dy, s.Out, w, s.In, 0f, dx, s.In),
                () => TiledWeightMatMulKernel.BackwardInput(dy, source, dx16, s.Rows, accumulate: false),
                MaxRelativeDiff(dx16, dx, xCount));
        }
        finally
        {
            foreach (var buffer in new[] { x, w, dy, y, y16, dx, dx16 }) NativeMemory.AlignedFree(buffer);
            NativeMemory.AlignedFree(w16);
        }
    }

    /// <summary>Times <paramref name="float32"/> and <paramref name="half"/> call by call and writes one JSON line.</summary>
    private static void MeasureLinear16(LinearShape s, DType dtype, string pass, double seconds, Action float32, Action half, Func<double> difference)
    {
        var (best, halfBest, calls) = Interleaved(float32, half, seconds);
        double flops = 2.0 * s.Rows * s.In * s.Out;
        double gflops = flops / best / 1e9, halfGflops = flops / halfBest / 1e9;
        Console.Error.WriteLine($"gemm: {s.Name} {dtype} {pass} {calls} calls, float32 {gflops:F1} GFLOP/s, {dtype} {halfGflops:F1} GFLOP/s, ratio {halfGflops / gflops:F3}");
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("name", s.Name);
            json.WriteString("pass", pass);
            json.WriteString("dtype", dtype == DType.BFloat16 ? "bf16" : "fp16");
            json.WriteNumber("rows", s.Rows);
            json.WriteNumber("in", s.In);
            json.WriteNumber("out", s.Out);
            json.WriteNumber("gflops", Math.Round(halfGflops, 1));
            json.WriteNumber("float32_gflops", Math.Round(gflops, 1));
            json.WriteNumber("ratio", Math.Round(halfGflops / gflops, 3));
            json.WriteNumber("max_rel_diff", difference());
            json.WriteNumber("threads", Threads);
            json.WriteEndObject();
        }
        Console.Out.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
    }

    /// <summary>
    /// Two warm-up calls of each, then <paramref name="first"/> and <paramref name="second"/> timed call by call in turn
    /// for at least <paramref name="seconds"/> and three rounds: the best seconds of each, under the same background load.
    /// </summary>
    private static (double First, double Second, int Rounds) Interleaved(Action first, Action second, double seconds)
    {
        for (int i = 0; i < 2; i++)
        {
            first();
            second();
        }
        double firstBest = double.MaxValue, secondBest = double.MaxValue, spent = 0;
        int rounds = 0;
        while (spent < seconds || rounds < 3)
        {
            double a = Time(first), b = Time(second);
            firstBest = Math.Min(firstBest, a);
            secondBest = Math.Min(secondBest, b);
            spent += a + b;
            rounds++;
        }
        return (firstBest, secondBest, rounds);
    }

    /// <summary>max |x − y| / max |y|.</summary>
    private static Func<double> MaxRelativeDiff(float* x, float* y, long count) => () =>
    {
        double worst = 0, scale = 1e-30;
        for (long i = 0; i < count; i++)
        {
            worst = Math.Max(worst, Math.Abs((double)x[i] - y[i]));
            scale = Math.Max(scale, Math.Abs((double)y[i]));
        }
        return worst / scale;
    };

    private static void RunShape(Shape s, SgemmKernel kernel, bool havePeer, double seconds)
    {
        int lda = s.TransA ? s.M : s.K, ldb = s.TransB ? s.K : s.N, ldc = s.N;
        long aCount = (long)s.M * s.K, bCount = (long)s.K * s.N, cCount = (long)s.M * s.N;
        float* a = Allocate(aCount, seed: 1);
        float* b = Allocate(bCount, seed: 2);
        float* c = Allocate(cCount, seed: 3);
        float* peerC = havePeer ? Allocate(cCount, seed: 3) : null;
        try
        {
            void Ours() => Sgemm.Multiply(kernel, s.TransA, s.TransB, s.M, s.N, s.K, 1f, a, lda, b, ldb, s.Beta, c, ldc);
            void Peer() => OpenBlas.Sgemm(s.TransA, s.TransB, s.M, s.N, s.K, 1f, a, lda, b, ldb, s.Beta, peerC, ldc);

            // Warm up: JIT tiers, pack buffers, OpenBLAS thread pool, first-touch page faults.
            Console.Error.WriteLine($"gemm: {s.Name} {s.M}x{s.N}x{s.K} warming up");
            for (int i = 0; i < 2; i++)
            {
                Ours();
                if (havePeer) Peer();
            }

            // Interleave the two libraries call by call so background load hits both alike,
            // and keep the best call of each: noise only ever makes a call slower.
            double best = double.MaxValue, peerBest = double.MaxValue, spent = 0;
            int calls = 0;
            while (spent < seconds || calls < 3)
            {
                double t = Time(Ours);
                best = Math.Min(best, t);
                spent += t;
                if (havePeer) peerBest = Math.Min(peerBest, Time(Peer));
                calls++;
            }

            // An accumulating shape (beta != 0) has summed a different number of calls into each C:
            // compare one call of each from the same starting C instead.
            if (havePeer && s.Beta != 0f)
            {
                Fill(c, cCount, seed: 3);
                Fill(peerC, cCount, seed: 3);
                Ours();
                Peer();
            }

            double flops = 2.0 * s.M * s.N * s.K;
            double gflops = flops / best / 1e9;
            double? peerGflops = havePeer ? flops / peerBest / 1e9 : null;
            double? maxDiff = havePeer ? MaxAbsDiff(c, peerC, cCount) : null;
            Console.Error.WriteLine($"gemm: {s.Name} {calls} calls, ours {gflops:F1} GFLOP/s, openblas {(peerGflops is double p ? p.ToString("F1") : "n/a")}");
            WriteResult(s, kernel, gflops, peerGflops, maxDiff, havePeer ? OpenBlas.CoreName : null);
        }
        finally
        {
            NativeMemory.AlignedFree(a);
            NativeMemory.AlignedFree(b);
            NativeMemory.AlignedFree(c);
            if (peerC != null) NativeMemory.AlignedFree(peerC);
        }
    }

    private static double Time(Action action)
    {
        long start = Stopwatch.GetTimestamp();
        action();
        return Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    private static void WriteResult(Shape s, SgemmKernel kernel, double gflops, double? peerGflops, double? maxDiff, string? peerCore)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("name", s.Name);
            json.WriteNumber("m", s.M);
            json.WriteNumber("n", s.N);
            json.WriteNumber("k", s.K);
            json.WriteString("trans", $"{(s.TransA ? 'T' : 'N')}{(s.TransB ? 'T' : 'N')}");
            json.WriteNumber("beta", s.Beta);
            json.WriteNumber("gflops", Math.Round(gflops, 1));
            json.WriteString("peer", "openblas");
            WriteNullable(json, "peer_gflops", peerGflops is double p ? Math.Round(p, 1) : null);
            // The OpenBLAS core the peer ran on (its own detection: OPENBLAS_CORETYPE is cleared for it).
            if (peerCore != null) json.WriteString("peer_core", peerCore);
            else json.WriteNull("peer_core");
            WriteNullable(json, "ratio", peerGflops is double q ? Math.Round(gflops / q, 3) : null);
            WriteNullable(json, "max_abs_diff", maxDiff);
            json.WriteNumber("threads", Threads);
            json.WriteString("kernel", kernel.ToString());
            json.WriteNumber("peak_rss_mb", Math.Round(Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024.0), 1));
            json.WriteEndObject();
        }
        Console.Out.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
    }

    private static void WriteNullable(Utf8JsonWriter json, string name, double? value)
    {
        if (value is double v) json.WriteNumber(name, v);
        else json.WriteNull(name);
    }

    /// <summary>64-byte aligned native buffer of uniform values in [-1, 1).</summary>
    private static float* Allocate(long count, int seed)
    {
        var buffer = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        Fill(buffer, count, seed);
        return buffer;
    }

    /// <summary>Overwrites a buffer with the values <see cref="Allocate"/> gives for <paramref name="seed"/>.</summary>
    private static void Fill(float* buffer, long count, int seed)
    {
        var rng = new Random(seed);
        for (long i = 0; i < count; i++) buffer[i] = (float)(rng.NextDouble() * 2 - 1);
    }

    private static double MaxAbsDiff(float* x, float* y, long count)
    {
        double worst = 0;
        for (long i = 0; i < count; i++) worst = Math.Max(worst, Math.Abs((double)x[i] - y[i]));
        return worst;
    }
}
