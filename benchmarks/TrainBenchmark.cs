using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftGen.Backends.Cpu;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Optim;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Benchmarks;

/// <summary>
/// <c>train --config stories15m --mode none|lora|qlora</c>: a training step of a Llama shaped like stories15M,
/// batch 8 × 256, 2 threads, against the same step in PyTorch run in the same invocation. none: forward + backward
/// with every weight trainable; lora: LoRA r = 8 on all seven projections, forward + backward + AdamW over the
/// adapters; qlora: the same over an NF4 + double-quant base.
/// </summary>
internal static class TrainBenchmark
{
    public static int Run(string[] args)
    {
        var options = BenchmarkArgs.Parse(args, new()
        {
            ["config"] = "stories15m", ["mode"] = "none", ["batch"] = "8", ["seq"] = "256", ["steps"] = "3", ["threads"] = "2", ["peer"] = "torch",
        });
        if (options["config"] != "stories15m") return BenchmarkArgs.Fail($"unknown --config '{options["config"]}' (known: stories15m)");
        string mode = options["mode"];
        if (mode is not ("none" or "lora" or "qlora")) return BenchmarkArgs.Fail($"unknown --mode '{mode}' (known: none, lora, qlora)");
        int batch = int.Parse(options["batch"]), seq = int.Parse(options["seq"]), steps = int.Parse(options["steps"]);
        int threads = int.Parse(options["threads"]);
        CpuParallel.MaxThreads = threads;
        var config = LlamaConfig.Stories15M with { MaxPositionEmbeddings = seq };

        var random = new Random(0);
        var inputs = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        var targets = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        using var model = new LlamaForCausalLM(config, seed: 0);
        PeftModel<LlamaForCausalLM>? peft = mode == "none" ? null : PeftModel.Create(model,
            new LoRAConfig { Rank = 8, Alpha = 16, Targets = TargetModules.AllLinear },
            mode == "qlora" ? new QuantizationConfig(QuantType.NF4, DoubleQuant: true, BlockSize: 64) : null);
        using var optimizer = peft == null ? null : new AdamW(peft.TrainableParameters(), 2e-4f, weightDecay: 0f);
        var times = new List<double>();
        float loss = 0;
        for (int step = 0; step <= steps; step++) // step 0 warms up (JIT, pools)
        {
            var clock = Stopwatch.StartNew();
            using (TensorScope.Begin())
            {
                var l = model.Loss(inputs, targets, batch, seq);
                loss = l.Item();
                l.Backward();
            }
            optimizer?.Step();
            foreach (var parameter in model.TrainableParameters()) parameter.ZeroGrad();
            times.Add(clock.Elapsed.TotalSeconds);
            Console.Error.WriteLine($"step {step}: {times[^1]:F3} s, loss {loss:F4}");
        }
        double best = times.Skip(1).Min();
        double tokensPerSecond = batch * seq / best;
        double peakRssMb = Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024.0);

        var peer = options["peer"] == "torch"
            ? PythonPeer.Run("train_llama_torch.py",
                $"--dim {config.HiddenSize} --layers {config.NumHiddenLayers} --heads {config.NumAttentionHeads} --kv-heads {config.KeyValueHeads} " +
                $"--hidden {config.IntermediateSize} --vocab {config.VocabSize} --batch {batch} --seq {seq} --steps {steps} --threads {threads} --mode {mode} --rank 8", threads)
            : null;
        double? peerTps = peer?["tokens_per_s"]?.GetValue<double>();
        var line = new JsonObject
        {
            ["name"] = $"train_stories15m_{mode}",
            ["mode"] = mode,
            ["batch"] = batch,
            ["seq"] = seq,
            ["threads"] = threads,
            ["tokens_per_s"] = Math.Round(tokensPerSecond, 1),
            ["step_s"] = Math.Round(best, 4),
            ["peak_rss_mb"] = Math.Round(peakRssMb, 1),
            ["loss"] = loss,
            ["peer"] = peer == null ? null : "pytorch",
            ["peer_tokens_per_s"] = peerTps is double p ? Math.Round(p, 1) : null,
            ["peer_peak_rss_mb"] = peer?["peak_rss_mb"]?.GetValue<double>() is double m ? Math.Round(m, 1) : null,
            ["ratio"] = peerTps is double q ? Math.Round(tokensPerSecond / q, 3) : null,
        };
        Console.WriteLine(line.ToJsonString());
        return 0;
    }
}
