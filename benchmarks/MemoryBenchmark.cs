using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Tensors;

namespace PeftGen.Benchmarks;

/// <summary>
/// QLoRA's promise at real sizes: writes bf16 Llama folders with random weights (TinyLlama-1.1B and Llama-2-7B layer
/// shapes, a 512-token vocabulary, sharded one decoder layer per file) into a temporary folder, runs
/// <c>peftgen train</c> for a few steps in a child process per configuration (nf4 and none, with and without gradient
/// checkpointing), and reports peak RSS per phase (after load, after step 1, end), the predicted peak, tokens/s and the
/// losses, one JSON line each. A configuration whose predicted peak does not fit in the machine's available memory is
/// reported as skipped rather than run into the out-of-memory killer.
/// </summary>
internal static class MemoryBenchmark
{
    private static readonly Dictionary<string, LlamaConfig> Shapes = new()
    {
        ["tinyllama"] = new LlamaConfig
        {
            HiddenSize = 2048, IntermediateSize = 5632, NumHiddenLayers = 22, NumAttentionHeads = 32, NumKeyValueHeads = 4,
            VocabSize = 512, MaxPositionEmbeddings = 2048, TieWordEmbeddings = false, BosTokenId = 1, EosTokenId = 2,
        },
        ["llama7b"] = new LlamaConfig
        {
            HiddenSize = 4096, IntermediateSize = 11008, NumHiddenLayers = 32, NumAttentionHeads = 32, NumKeyValueHeads = 32,
            VocabSize = 512, MaxPositionEmbeddings = 4096, TieWordEmbeddings = false, BosTokenId = 1, EosTokenId = 2,
        },
    };

    public static int Run(string[] args)
    {
        var o = BenchmarkArgs.Parse(args, new()
        {
            ["models"] = "tinyllama,llama7b", ["quant"] = "nf4,none", ["checkpointing"] = "on,off", ["steps"] = "2",
            ["length"] = "tinyllama=256,llama7b=512", ["lr"] = "2e-4", ["work"] = Path.Combine(Path.GetTempPath(), "peftgen-memory-bench"),
            ["tokenizer"] = Path.Combine(FindRoot(), "..", "shared", "models", "stories260K", "tok512.bin"), ["keep"] = "false", ["data-lines"] = "64",
        });
        string tokenizer = Path.GetFullPath(o["tokenizer"]);
        if (!File.Exists(tokenizer))
            return BenchmarkArgs.Fail($"no 512-token tokenizer at {tokenizer}: pass --tokenizer (a llama2.c tok512.bin, e.g. from ../shared/models/stories260K)");
        var lengths = o["length"].Split(',').Select(p => p.Split('=')).ToDictionary(p => p[0], p => int.Parse(p[1], CultureInfo.InvariantCulture));
        string cli = BuildCli();
        Directory.CreateDirectory(o["work"]);
        string data = WriteDataset(Path.Combine(o["work"], "stories.jsonl"), int.Parse(o["data-lines"], CultureInfo.InvariantCulture));
        try
        {
            foreach (var name in o["models"].Split(','))
            {
                var config = Shapes.TryGetValue(name, out var c) ? c : throw new ArgumentException($"unknown model '{name}' (known: {string.Join(", ", Shapes.Keys)})");
                string folder = Path.Combine(o["work"], name);
                WriteModel(folder, config, tokenizer);
                foreach (var quant in o["quant"].Split(','))
                    foreach (var checkpointing in o["checkpointing"].Split(','))
                        Console.Out.WriteLine(RunConfiguration(cli, name, folder, data, quant, checkpointing == "on", lengths[name], o["steps"], o["lr"], o["work"]).ToJsonString());
                if (o["keep"] != "true") Directory.Delete(folder, recursive: true);
            }
        }
        finally
        {
            if (o["keep"] != "true") Directory.Delete(o["work"], recursive: true);
        }
        return 0;
    }

    private static JsonObject RunConfiguration(string cli, string model, string folder, string data, string quant, bool checkpointing,
        int length, string steps, string lr, string work)
    {
        string output = Path.Combine(work, $"out-{model}-{quant}-{(checkpointing ? "ckpt" : "full")}");
        string[] common = ["train", "--model", folder, "--data", data, "--steps", steps, "--batch-size", "1", "--max-length", length.ToString(CultureInfo.InvariantCulture),
            "--quant", quant, "--lr", lr, "--pack", "--output", output, .. checkpointing ? ["--gradient-checkpointing"] : Array.Empty<string>()];
        var result = new JsonObject
        {
            ["benchmark"] = "memory", ["model"] = model, ["quant"] = quant, ["gradient_checkpointing"] = checkpointing,
            ["batch"] = 1, ["length"] = length,
        };
        var dryRun = RunChild(cli, [.. common, "--dry-run"], out _);
        var prediction = JsonNode.Parse(dryRun.Stdout.Trim().Split('\n')[^1])!.AsObject();
        long predicted = prediction["predicted_peak_bytes"]!.GetValue<long>();
        result["predicted_peak_mb"] = Mb(predicted);
        result["predicted_after_load_mb"] = Mb(prediction["after_load_bytes"]!.GetValue<long>());
        long available = AvailableBytes();
        if (predicted > available * 0.9)
        {
            result["skipped"] = $"predicted peak {Mb(predicted)} MB does not fit in the {Mb(available)} MB available";
            Console.Error.WriteLine($"{model} {quant} {(checkpointing ? "ckpt" : "full")}: skipped ({result["skipped"]})");
            return result;
        }
        Console.Error.WriteLine($"{model} {quant} {(checkpointing ? "ckpt" : "full")}: training {steps} steps (predicted peak {Mb(predicted)} MB)...");
        var run = RunChild(cli, common, out long peakKb);
        if (run.ExitCode != 0)
        {
            result["error"] = $"exit {run.ExitCode}: {run.Stderr[Math.Max(0, run.Stderr.Length - 2000)..]}";
            return result;
        }
        var afterLoad = run.Stderr.Split('\n').FirstOrDefault(l => l.StartsWith("memory after load:", StringComparison.Ordinal));
        // "memory after load: peak resident set X GB, resident Y GB (predicted Z GB)"
        var words = afterLoad?.Split(' ');
        result["after_load_mb"] = words != null ? GbToMb(words[6]) : null;
        result["resident_after_load_mb"] = words != null ? GbToMb(words[9]) : null;
        var metrics = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        result["after_step1_mb"] = metrics[0]["peak_rss_mb"]?.GetValue<double>();
        result["end_mb"] = Math.Round(peakKb / 1024.0, 1);
        result["predicted_over_measured"] = Math.Round(predicted / (peakKb * 1024.0), 3);
        result["tokens_per_s"] = metrics[^1]["tokens_per_s"]?.GetValue<double>();
        result["losses"] = new JsonArray([.. metrics.Select(m => (JsonNode?)m["loss"]?.GetValue<double>())]);
        result["seconds"] = metrics[^1]["elapsed_s"]?.GetValue<double>();
        Directory.Delete(output, recursive: true);
        return result;
    }

    /// <summary>A Hugging Face folder in bf16 with random weights (std ≈ 0.02), one shard per decoder layer, and the tokenizer.</summary>
    private static void WriteModel(string folder, LlamaConfig config, string tokenizer)
    {
        if (File.Exists(Path.Combine(folder, HuggingFaceLlama.IndexFileName))) return;
        Directory.CreateDirectory(folder);
        var clock = Stopwatch.StartNew();
        var shapes = HuggingFaceLlama.ExpectedShapes(config);
        var shards = shapes.Keys.GroupBy(ShardOf).ToList();
        var weightMap = new JsonObject();
        long totalBytes = 0;
        var rng = new Rng(42);
        for (int s = 0; s < shards.Count; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            var tensors = new List<(string, Tensor)>();
            foreach (var name in shards[s])
            {
                var t = Tensor.Create(shapes[name], DType.Float32, zeroed: false, scoped: false);
                var span = t.AsSpan();
                if (name.EndsWith("norm.weight", StringComparison.Ordinal)) span.Fill(1f);
                else for (int i = 0; i < span.Length; i++) span[i] = (rng.NextSingle() - 0.5f) * 0.07f; // uniform, std 0.02
                tensors.Add((name, t));
                weightMap[name] = file;
                totalBytes += t.Count * 2;
            }
            Safetensors.Save(Path.Combine(folder, file), tensors, new Dictionary<string, string> { ["format"] = "pt" }, DType.BFloat16);
            foreach (var (_, t) in tensors) t.Dispose();
        }
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = totalBytes }, ["weight_map"] = weightMap };
        File.WriteAllText(Path.Combine(folder, HuggingFaceLlama.IndexFileName), index.ToJsonString());
        var json = JsonNode.Parse(config.ToJson())!.AsObject();
        json["architectures"] = new JsonArray("LlamaForCausalLM");
        json["torch_dtype"] = "bfloat16";
        File.WriteAllText(Path.Combine(folder, HuggingFaceLlama.ConfigFileName), json.ToJsonString());
        File.Copy(tokenizer, Path.Combine(folder, "tokenizer.bin"), overwrite: true);
        Console.Error.WriteLine($"wrote {folder}: {totalBytes / 1e9:F2} GB bf16 in {shards.Count} shards ({clock.Elapsed.TotalSeconds:F0} s)");

        static string ShardOf(string name) => name.StartsWith("model.layers.", StringComparison.Ordinal) ? name.Split('.')[2] : "other";
    }

    /// <summary>A small story dataset; with one line every step sees the same batch, so a short run shows the loss going down.</summary>
    private static string WriteDataset(string path, int lines)
    {
        string[] openings = ["Once upon a time, there was a little girl named Lily.", "One day, a boy named Tom found a big red ball.",
            "The sun was warm and the sky was blue.", "A small dog liked to play in the park with his friends."];
        var records = Enumerable.Range(0, lines).Select(i => JsonSerializer.Serialize(new Dictionary<string, string>
        {
            // Long enough to fill a 512-token row (rows are cut to --max-length), so every step is the full batch × length.
            ["text"] = string.Join(" ", Enumerable.Range(0, 64).Select(j => openings[(i + j) % openings.Length])),
        }));
        File.WriteAllLines(path, records);
        return path;
    }

    private static (int ExitCode, string Stdout, string Stderr) RunChild(string cli, string[] args, out long peakKb)
    {
        // /usr/bin/time -f %M prints the child's peak resident set (KiB) as the last stderr line.
        var info = new ProcessStartInfo("/usr/bin/time", ["-f", "%M", "dotnet", cli, .. args])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        string err = stderr.Result.TrimEnd();
        peakKb = long.TryParse(err.Split('\n')[^1].Trim(), out long kb) ? kb : 0;
        return (process.ExitCode, stdout.Result, err);
    }

    private static string BuildCli()
    {
        string root = FindRoot();
        var build = Process.Start(new ProcessStartInfo("dotnet", ["build", "-c", "Release", Path.Combine(root, "src", "Cli"), "-v", "q", "-nologo"]) { RedirectStandardOutput = true })!;
        build.StandardOutput.ReadToEnd();
        build.WaitForExit();
        if (build.ExitCode != 0) throw new InvalidOperationException("building src/Cli failed");
        return Path.Combine(root, "src", "Cli", "bin", "Release", "net10.0", "peftgen.dll");
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PeftGen.sln"))) return dir.FullName;
        throw new InvalidOperationException("run the benchmark from inside the repository");
    }

    private static long AvailableBytes()
    {
        var line = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal));
        return line != null ? long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024 : long.MaxValue;
    }

    private static double Mb(long bytes) => Math.Round(bytes / 1048576.0, 1);

    private static double GbToMb(string gigabytes) => Math.Round(double.Parse(gigabytes, CultureInfo.InvariantCulture) * 1e9 / 1048576.0, 1);
}
