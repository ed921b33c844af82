using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftGen.Backends.Cpu;
using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.Benchmarks;

/// <summary>
/// <c>train --config stories15m --mode none</c>: forward + backward of a Llama shaped like stories15M (all weights
/// trainable), batch 8 × 256, 2 threads, against the same step in PyTorch run in the same invocation.
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
        if (options["mode"] != "none") return BenchmarkArgs.Fail($"unknown --mode '{options["mode"]}' (known today: none)");
        int batch = int.Parse(options["batch"]), seq = int.Parse(options["seq"]), steps = int.Parse(options["steps"]);
        int threads = int.Parse(options["threads"]);
        CpuParallel.MaxThreads = threads;
        var config = LlamaConfig.Stories15M with { MaxPositionEmbeddings = seq };

        var random = new Random(0);
        var inputs = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        var targets = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        using var model = new LlamaForCausalLM(config, seed: 0);
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
                $"--hidden {config.IntermediateSize} --vocab {config.VocabSize} --batch {batch} --seq {seq} --steps {steps} --threads {threads} --mode none", threads)
            : null;
        double? peerTps = peer?["tokens_per_s"]?.GetValue<double>();
        var line = new JsonObject
        {
            ["name"] = "train_stories15m_none",
            ["mode"] = "none",
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
