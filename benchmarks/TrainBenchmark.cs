using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftGen.Backends;
using PeftGen.Backends.Cpu;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Optim;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Benchmarks;

/// <summary>
/// <c>train --config stories15m --mode none|lora|qlora[,…]</c>: a training step of a Llama shaped like stories15M,
/// batch 8 × 256, 2 threads, against the same step in PyTorch run in the same invocation. none: forward + backward
/// with every weight trainable; lora: LoRA r = 8 on all seven projections, forward + backward + AdamW over the
/// adapters; qlora: the same over an NF4 + double-quant base.
/// Besides tokens/s it reports the model FLOPs per token (<see cref="TrainingFlops"/>), the utilisation they give
/// against this run's own SGEMM rate at 2048³, and one profiled step's time by kind of work (<see cref="WorkProfiler"/>).
/// Several modes (<c>--mode lora,qlora</c>) build one model each and alternate their steps, so a ratio between them is
/// measured under the same background load; peak memory is then the process's for all of them (measure it one mode per run).
/// <c>--rounds R</c> alternates R times between this runtime's steps and the PyTorch peer's run, and reports the median of
/// the R ratios (each round's best step against that round's peer), so a slow spell on a shared machine moves one round,
/// not the figure.
/// </summary>
internal static class TrainBenchmark
{
    private const int Rank = 8;

    public static int Run(string[] args)
    {
        var options = BenchmarkArgs.Parse(args, new()
        {
            ["config"] = "stories15m", ["mode"] = "none", ["batch"] = "8", ["seq"] = "256", ["steps"] = "3", ["threads"] = "2", ["peer"] = "torch", ["rounds"] = "1",
        });
        if (options["config"] != "stories15m") return BenchmarkArgs.Fail($"unknown --config '{options["config"]}' (known: stories15m)");
        string[] modes = options["mode"].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (modes.Length == 0 || modes.Any(m => m is not ("none" or "lora" or "qlora")) || modes.Distinct().Count() != modes.Length)
            return BenchmarkArgs.Fail($"unknown --mode '{options["mode"]}' (known: none, lora, qlora, or several of them comma-separated)");
        int batch = int.Parse(options["batch"]), seq = int.Parse(options["seq"]), steps = int.Parse(options["steps"]);
        int threads = int.Parse(options["threads"]), rounds = int.Parse(options["rounds"]);
        if (rounds < 1 || (rounds > 1 && modes.Length > 1))
            return BenchmarkArgs.Fail("--rounds must be at least 1, and more than 1 only with a single --mode");
        CpuParallel.MaxThreads = threads;
        var config = LlamaConfig.Stories15M with { MaxPositionEmbeddings = seq };

        double sgemmGflops = SgemmRate.Measure();
        Console.Error.WriteLine($"train: SGEMM 2048³ at {sgemmGflops:F1} GFLOP/s on {threads} threads (the utilisation yardstick)");

        var random = new Random(0);
        var inputs = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        var targets = Enumerable.Range(0, batch * seq).Select(_ => random.Next(config.VocabSize)).ToArray();
        var runs = modes.Select(mode => new ModeRun(mode, config, inputs, targets, batch, seq)).ToList();
        try
        {
            for (int step = 0; step <= steps; step++) // step 0 warms up (JIT, pools)
                foreach (var run in runs)
                {
                    run.Times.Add(run.Step());
                    Console.Error.WriteLine($"{run.Mode} step {step}: {run.Times[^1]:F3} s, loss {run.Loss:F4}");
                }
            double? peakRssMb = runs.Count == 1 ? Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024.0) : null;
            var tokensPerSecond = new Dictionary<string, double>();
            foreach (var run in runs)
            {
                double best = run.Times.Skip(1).Min();
                tokensPerSecond[run.Mode] = batch * seq / best;
                WriteResult(run, best, batch, seq, threads, steps, rounds, config, sgemmGflops, peakRssMb, options["peer"] == "torch");
            }
            if (tokensPerSecond.TryGetValue("lora", out double lora) && tokensPerSecond.TryGetValue("qlora", out double qlora))
                Console.WriteLine(new JsonObject
                {
                    ["name"] = "train_stories15m_qlora_over_lora",
                    ["ratio"] = Math.Round(qlora / lora, 3),
                    ["lora_tokens_per_s"] = Math.Round(lora, 1),
                    ["qlora_tokens_per_s"] = Math.Round(qlora, 1),
                }.ToJsonString());
        }
        finally
        {
            foreach (var run in runs) run.Dispose();
        }
        return 0;
    }

    /// <summary>One profiled step of <paramref name="run"/>, its FLOP rate, the peer's runs (alternated with ours over the rounds) and one JSON line.</summary>
    private static void WriteResult(ModeRun run, double best, int batch, int seq, int threads, int steps, int rounds, LlamaConfig config,
        double sgemmGflops, double? peakRssMb, bool withPeer)
    {
        string mode = run.Mode;
        double tokensPerSecond = batch * seq / best;
        var gcPause = GC.GetTotalPauseDuration();
        WorkProfiler.Start();
        double profiledStep = run.Step();
        var profile = WorkProfiler.Stop();
        gcPause = GC.GetTotalPauseDuration() - gcPause;

        var flops = TrainingFlops.PerToken(config, seq, baseTrainable: mode == "none", loraRank: mode == "none" ? 0 : Rank);
        double achievedGflops = tokensPerSecond * flops.Total / 1e9;
        double utilisation = achievedGflops / sgemmGflops;
        Console.Error.WriteLine($"train {mode}: {flops.Total / 1e6:F1} MFLOP/token (projections {flops.Projections / 1e6:F1}, head {flops.Head / 1e6:F1}, " +
            $"adapters {flops.Adapters / 1e6:F2}, attention {flops.Attention / 1e6:F2}) → {achievedGflops:F1} GFLOP/s = {utilisation:P1} of SGEMM");
        var breakdown = Breakdown(profile, profiledStep, gcPause.TotalSeconds);

        JsonObject? peer = null;
        var ratios = new List<double>();
        var peerRates = new List<double>();
        for (int round = 0; withPeer && round < rounds; round++)
        {
            double roundBest = best;
            if (round > 0)
            {
                roundBest = Enumerable.Range(0, steps).Min(_ => run.Step());
                Console.Error.WriteLine($"{mode} round {round + 1}: best step {roundBest:F3} s");
            }
            peer = PythonPeer.Run("train_llama_torch.py",
                $"--dim {config.HiddenSize} --layers {config.NumHiddenLayers} --heads {config.NumAttentionHeads} --kv-heads {config.KeyValueHeads} " +
                $"--hidden {config.IntermediateSize} --vocab {config.VocabSize} --batch {batch} --seq {seq} --steps {steps} --threads {threads} --mode {mode} --rank {Rank}", threads);
            if (peer?["tokens_per_s"]?.GetValue<double>() is not double rate) break;
            peerRates.Add(rate);
            ratios.Add(batch * seq / roundBest / rate);
            Console.Error.WriteLine($"{mode} round {round + 1}: {batch * seq / roundBest:F0} tokens/s against PyTorch's {rate:F0}, ratio {ratios[^1]:F3}");
        }
        double? peerTps = peerRates.Count > 0 ? Median(peerRates) : null;
        var line = new JsonObject
        {
            ["name"] = $"train_stories15m_{mode}",
            ["mode"] = mode,
            ["batch"] = batch,
            ["seq"] = seq,
            ["threads"] = threads,
            ["tokens_per_s"] = Math.Round(tokensPerSecond, 1),
            ["step_s"] = Math.Round(best, 4),
            ["mflop_per_token"] = Math.Round(flops.Total / 1e6, 2),
            ["gflops"] = Math.Round(achievedGflops, 1),
            ["sgemm_gflops"] = Math.Round(sgemmGflops, 1),
            ["utilisation"] = Math.Round(utilisation, 3),
            ["breakdown_ms"] = breakdown,
            ["peak_rss_mb"] = peakRssMb is double rss ? Math.Round(rss, 1) : null,
            ["loss"] = run.Loss,
            ["peer"] = peer == null ? null : "pytorch",
            ["peer_tokens_per_s"] = peerTps is double p ? Math.Round(p, 1) : null,
            ["peer_peak_rss_mb"] = peer?["peak_rss_mb"]?.GetValue<double>() is double m ? Math.Round(m, 1) : null,
            ["peer_openblas_core"] = peer?["openblas_core"]?.GetValue<string>(),
            ["ratio"] = ratios.Count > 0 ? Math.Round(Median(ratios), 3) : null,
            ["rounds"] = ratios.Count,
            ["ratio_min"] = ratios.Count > 1 ? Math.Round(ratios.Min(), 3) : null,
            ["ratio_max"] = ratios.Count > 1 ? Math.Round(ratios.Max(), 3) : null,
        };
        Console.WriteLine(line.ToJsonString());
    }

    /// <summary>A model (and its adapter and optimizer) for one mode, and its step times.</summary>
    private sealed class ModeRun : IDisposable
    {
        private readonly LlamaForCausalLM _model;
        private readonly PeftModel<LlamaForCausalLM>? _peft;
        private readonly AdamW? _optimizer;
        private readonly int[] _inputs, _targets;
        private readonly int _batch, _seq;

        public ModeRun(string mode, LlamaConfig config, int[] inputs, int[] targets, int batch, int seq)
        {
            Mode = mode;
            (_inputs, _targets, _batch, _seq) = (inputs, targets, batch, seq);
            _model = new LlamaForCausalLM(config, seed: 0);
            _peft = mode == "none" ? null : PeftModel.Create(_model,
                new LoRAConfig { Rank = Rank, Alpha = 2 * Rank, Targets = TargetModules.AllLinear },
                mode == "qlora" ? new QuantizationConfig(QuantType.NF4, DoubleQuant: true, BlockSize: 64) : null);
            _optimizer = _peft == null ? null : new AdamW(_peft.TrainableParameters(), 2e-4f, weightDecay: 0f);
        }

        public string Mode { get; }
        public List<double> Times { get; } = [];
        public float Loss { get; private set; }

        /// <summary>Forward, backward, optimizer step and zeroed gradients; returns its seconds.</summary>
        public double Step()
        {
            long start = Stopwatch.GetTimestamp();
            using (TensorScope.Begin())
            {
                var loss = _model.Loss(_inputs, _targets, _batch, _seq);
                Loss = loss.Item();
                loss.Backward();
            }
            _optimizer?.Step();
            foreach (var parameter in _model.TrainableParameters()) parameter.ZeroGrad();
            return Stopwatch.GetElapsedTime(start).TotalSeconds;
        }

        public void Dispose()
        {
            _optimizer?.Dispose();
            _model.Dispose();
        }
    }

    /// <summary>
    /// Prints the profiled step's time by kind of work and pass to stderr and returns it (ms) for the JSON line. What no
    /// kernel timer saw (the tape, closures, tensor views, the GC) is "bookkeeping".
    /// </summary>
    private static JsonObject Breakdown(WorkProfile profile, double stepSeconds, double gcSeconds)
    {
        var result = new JsonObject();
        Console.Error.WriteLine($"train: profiled step {stepSeconds * 1e3:F1} ms");
        Console.Error.WriteLine($"  {"kind",-22} {"forward ms",10} {"backward ms",11} {"total ms",9} {"share",6} {"calls",6}");
        foreach (var kind in Enum.GetValues<WorkKind>())
        {
            double forward = profile.Seconds(kind, backward: false) * 1e3, backward = profile.Seconds(kind, backward: true) * 1e3;
            long calls = profile.Calls(kind);
            if (calls == 0) continue;
            Console.Error.WriteLine($"  {kind,-22} {forward,10:F1} {backward,11:F1} {forward + backward,9:F1} {(forward + backward) / (stepSeconds * 1e3),6:P0} {calls,6}");
            result[Snake(kind.ToString())] = Math.Round(forward + backward, 1);
        }
        double bookkeeping = (stepSeconds - profile.TotalSeconds) * 1e3;
        Console.Error.WriteLine($"  {"Bookkeeping",-22} {"",10} {"",11} {bookkeeping,9:F1} {bookkeeping / (stepSeconds * 1e3),6:P0}   (of which GC pauses {gcSeconds * 1e3:F1} ms)");
        result["bookkeeping"] = Math.Round(bookkeeping, 1);
        result["gc_pause"] = Math.Round(gcSeconds * 1e3, 1);
        return result;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        int middle = sorted.Count / 2;
        return sorted.Count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }

    private static string Snake(string name) =>
        string.Concat(name.Select((c, i) => char.IsUpper(c) && i > 0 ? "_" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));
}
