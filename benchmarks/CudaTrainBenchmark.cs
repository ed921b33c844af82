using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using PeftGen.Backends.Cuda;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Optim;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Benchmarks;

/// <summary>
/// <c>cuda-train</c>: QLoRA training tokens/s, MFU and peak GPU memory of a Llama shaped like TinyLlama-1.1B (dim 2048,
/// 22 layers, 32 heads, 4 KV heads, hidden 5632, vocab 32000, random weights), r = 16 on all seven projections, NF4 +
/// double-quantized base, at sequence lengths 1024 and 2048, against Hugging Face transformers + PEFT LoRA in bf16 on the
/// same GPU in the same run (benchmarks/peers/train_tinyllama_peft.py). Targets: QLoRA ≥ 1.0× PEFT's tokens/s at ≤ 0.5×
/// its peak memory.
/// <c>cuda-peft-export --out DIR</c>: writes a small float Llama, a LoRA adapter trained a few steps by PeftGen and
/// PeftGen's logits, for benchmarks/peers/peft_roundtrip_check.py to load in PEFT and compare.
/// </summary>
internal static class CudaTrainBenchmark
{
    /// <summary>TinyLlama-1.1B's shape.</summary>
    private static LlamaConfig TinyLlama(int seq) => new()
    {
        HiddenSize = 2048, IntermediateSize = 5632, NumHiddenLayers = 22, NumAttentionHeads = 32, NumKeyValueHeads = 4,
        VocabSize = 32000, RmsNormEps = 1e-5f, RopeTheta = 10000f, MaxPositionEmbeddings = seq, TieWordEmbeddings = false,
    };

    public static int Run(string[] args)
    {
        var options = BenchmarkArgs.Parse(args, new()
        {
            ["device"] = "cuda:0", ["seqs"] = "1024,2048", ["batch"] = "1", ["steps"] = "5", ["rank"] = "16", ["layers"] = "22",
            ["peak-tflops"] = "989", ["peer"] = "peft",
        });
        CudaSupport.Register(); // PeftGen.Cuda: tensors, ops and optimizers on CUDA devices go to the CUDA backend
        var device = DeviceSelection.Parse(options["device"]);
        if (device.Type != DeviceType.Cuda) return BenchmarkArgs.Fail("cuda-train needs --device cuda or cuda:N");
        int batch = int.Parse(options["batch"], CultureInfo.InvariantCulture), steps = int.Parse(options["steps"], CultureInfo.InvariantCulture);
        int rank = int.Parse(options["rank"], CultureInfo.InvariantCulture), layers = int.Parse(options["layers"], CultureInfo.InvariantCulture);
        double peakTflops = double.Parse(options["peak-tflops"], CultureInfo.InvariantCulture);
        var seqs = options["seqs"].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var backend = CudaBackend.For(device);
        var context = backend.Context;

        var config = TinyLlama(seqs.Max()) with { NumHiddenLayers = layers };
        var clock = Stopwatch.StartNew();
        using var model = new LlamaForCausalLM(config, seed: 0);
        var peft = PeftModel.Create(model, new LoRAConfig { Rank = rank, Alpha = 2 * rank, Targets = TargetModules.AllLinear },
            new QuantizationConfig(QuantType.NF4, DoubleQuant: true, BlockSize: 64));
        foreach (var (_, p) in model.NamedParameters()) p.MoveTo(device);
        Console.Error.WriteLine($"model built, quantized and moved to {device} in {clock.Elapsed.TotalSeconds:F1} s ({context.Info.Name})");
        using var optimizer = new AdamW(peft.TrainableParameters(), 2e-4f, weightDecay: 0f);
        long trainable = peft.TrainableParameters().Sum(p => p.Count);

        var random = new Random(0);
        foreach (int seq in seqs)
        {
            var inputs = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
            var targets = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
            context.Synchronize();
            context.Allocator.ResetPeak();
            var times = new List<double>();
            float loss = 0;
            for (int step = 0; step <= steps; step++) // step 0 compiles kernels (or reads them from the cache) and fills the allocator
            {
                var stepClock = Stopwatch.StartNew();
                using (TensorScope.Begin())
                {
                    var l = model.Loss(inputs, targets, batch, seq);
                    loss = l.Item();
                    l.Backward();
                }
                optimizer.Step();
                optimizer.ZeroGrad();
                context.Synchronize();
                times.Add(stepClock.Elapsed.TotalSeconds);
                Console.Error.WriteLine($"seq {seq} step {step}: {times[^1]:F3} s, loss {loss:F4}");
            }
            double median = Median(times.Skip(1));
            double tokensPerSecond = batch * seq / median;
            double flopsPerToken = FlopsPerToken(config, seq, trainable);
            double peakMb = context.Allocator.Stats.PeakAllocatedBytes / (1024.0 * 1024.0);
            var (free, total) = context.MemoryInfo();

            var peer = options["peer"] == "peft"
                ? PythonPeer.Run("train_tinyllama_peft.py",
                    $"--dim {config.HiddenSize} --layers {config.NumHiddenLayers} --heads {config.NumAttentionHeads} --kv-heads {config.KeyValueHeads} " +
                    $"--hidden {config.IntermediateSize} --vocab {config.VocabSize} --batch {batch} --seq {seq} --steps {steps} --rank {rank} " +
                    $"--device cuda:{device.Index}", Environment.ProcessorCount)
                : null;
            double? peerTps = peer?["tokens_per_s"]?.GetValue<double>();
            double? peerMb = peer?["peak_gpu_mb"]?.GetValue<double>();
            var line = new JsonObject
            {
                ["name"] = $"cuda_train_tinyllama_qlora_seq{seq}",
                ["device"] = context.Info.Name,
                ["batch"] = batch,
                ["seq"] = seq,
                ["rank"] = rank,
                ["layers"] = config.NumHiddenLayers,
                ["gemm_precision"] = backend.GemmPrecision.ToString(),
                ["tokens_per_s"] = Math.Round(tokensPerSecond, 1),
                ["step_s"] = Math.Round(median, 4),
                ["mfu"] = Math.Round(flopsPerToken * tokensPerSecond / (peakTflops * 1e12), 4),
                ["flops_per_token"] = flopsPerToken,
                ["peak_tflops"] = peakTflops,
                ["peak_gpu_mb"] = Math.Round(peakMb, 1),
                ["device_used_mb"] = Math.Round((total - free) / (1024.0 * 1024.0), 1),
                ["loss"] = loss,
                ["peer"] = peer == null ? null : "transformers+peft bf16 LoRA",
                ["peer_tokens_per_s"] = peerTps is double t ? Math.Round(t, 1) : null,
                ["peer_mfu"] = peerTps is double u ? Math.Round(flopsPerToken * u / (peakTflops * 1e12), 4) : null,
                ["peer_peak_gpu_mb"] = peerMb is double m ? Math.Round(m, 1) : null,
                ["speed_ratio"] = peerTps is double q ? Math.Round(tokensPerSecond / q, 3) : null,
                ["memory_ratio"] = peerMb is double r && r > 0 ? Math.Round(peakMb / r, 3) : null,
                ["targets_met"] = peerTps is double q2 && peerMb is double r2 ? tokensPerSecond >= q2 && peakMb <= 0.5 * r2 : null,
            };
            Console.WriteLine(line.ToJsonString());
        }
        return 0;
    }

    /// <summary>
    /// Model FLOPs per trained token (no recomputation counted), the same formula for both sides: the frozen base's
    /// linear layers and the LM head do forward and input-gradient GEMMs (4 FLOPs per weight), adapters also their weight
    /// gradients (6), and causal attention 2·seq·dim multiply-adds per token and layer forward (half of QKᵀ and PV), ×3 with
    /// backward.
    /// </summary>
    internal static double FlopsPerToken(LlamaConfig c, int seq, long trainableParameters)
    {
        long kv = (long)c.KeyValueHeads * c.HeadDim;
        long perLayer = (long)c.HiddenSize * c.HiddenSize * 2 + 2L * c.HiddenSize * kv + 3L * c.HiddenSize * c.IntermediateSize;
        double baseLinear = (double)perLayer * c.NumHiddenLayers + (double)c.HiddenSize * c.VocabSize;
        double attention = 3.0 * 2.0 * seq * c.HiddenSize * c.NumHiddenLayers;
        return 4 * baseLinear + 6.0 * trainableParameters + attention;
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? double.NaN : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>
    /// <c>cuda-peft-export --out DIR [--device cuda:0|cpu]</c>: a small float Llama in Hugging Face layout (DIR/base), a LoRA
    /// adapter on all seven projections trained a few steps (DIR/adapter), and the token ids and PeftGen's logits with the
    /// adapter (DIR/expected.safetensors: "input_ids" as float32, "logits" [1, t, vocab]).
    /// </summary>
    public static int Export(string[] args)
    {
        var options = BenchmarkArgs.Parse(args, new() { ["out"] = "", ["device"] = "cuda:0", ["steps"] = "5" });
        if (options["out"].Length == 0) return BenchmarkArgs.Fail("cuda-peft-export needs --out DIR");
        CudaSupport.Register();
        var device = DeviceSelection.Parse(options["device"]);
        int steps = int.Parse(options["steps"], CultureInfo.InvariantCulture);
        string root = Path.GetFullPath(options["out"]);
        var config = new LlamaConfig
        {
            HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = 2, NumAttentionHeads = 8, NumKeyValueHeads = 2,
            VocabSize = 1000, RmsNormEps = 1e-5f, MaxPositionEmbeddings = 64, TieWordEmbeddings = false,
        };
        using var model = new LlamaForCausalLM(config, seed: 7);
        HuggingFaceLlama.Save(model, Path.Combine(root, "base")); // before the adapters wrap the projections
        var peft = PeftModel.Create(model, new LoRAConfig { Rank = 8, Alpha = 16, Targets = TargetModules.AllLinear });
        foreach (var (_, p) in model.NamedParameters()) p.MoveTo(device);
        using var optimizer = new AdamW(peft.TrainableParameters(), 1e-2f, weightDecay: 0f);
        var random = new Random(1);
        int batch = 2, seq = 32;
        var inputs = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        var targets = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        for (int step = 0; step < steps; step++) // train so that lora_B is far from its zero initialisation
        {
            using (TensorScope.Begin())
            {
                var loss = model.Loss(inputs, targets, batch, seq);
                Console.Error.WriteLine($"export step {step}: loss {loss.Item():F4}");
                loss.Backward();
            }
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        foreach (var (_, p) in model.NamedParameters()) p.MoveTo(Device.Cpu);
        PeftAdapterFile.Save(peft, Path.Combine(root, "adapter"), baseModelNameOrPath: Path.Combine(root, "base"));
        var ids = inputs.Take(seq).ToArray();
        using (TensorScope.Begin())
        {
            var logits = model.Forward(ids, 1, seq);                                       // [1, t, vocab]
            using var idTensor = Tensor.FromArray(ids.Select(i => (float)i).ToArray(), 1, seq);
            Safetensors.Save(Path.Combine(root, "expected.safetensors"), [("input_ids", idTensor), ("logits", logits)]);
        }
        Console.WriteLine(new JsonObject { ["name"] = "cuda_peft_export", ["out"] = root, ["device"] = device.ToString(), ["seq"] = seq }.ToJsonString());
        return 0;
    }
}
