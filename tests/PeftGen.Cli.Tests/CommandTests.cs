using System.Globalization;
using System.Text.Json;
using System.Xml.Linq;
using PeftGen.Autograd;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.TestSupport;
using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>train, merge, inspect, convert and generate --adapter end to end on a tiny model built here (and on stories260K when present).</summary>
public class CommandTests
{
    private static readonly int[] Prompt = [1, 60, 75, 82, 83, 3 + 256 + 1, 90, 91];

    [Fact]
    public void Train_dry_run_predicts_memory_and_writes_nothing()
    {
        using var root = CliRunner.TempFolder("dry-run");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string output = Path.Combine(root, "out");

        var (code, stdout, stderr) = CliRunner.Run("train", "--model", model, "--data", data, "--output", output,
            "--batch-size", "2", "--max-length", "32", "--gradient-checkpointing", "--dry-run");

        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("memory: predicted peak", stderr);
        using var json = JsonDocument.Parse(stdout);
        long total = json.RootElement.GetProperty("predicted_peak_bytes").GetInt64();
        long parts = new[] { "four_bit_weights_bytes", "frozen_weights_bytes", "adapter_bytes", "activations_bytes", "workspace_bytes", "runtime_bytes" }
            .Sum(name => json.RootElement.GetProperty(name).GetInt64());
        Assert.Equal(total, parts);
        Assert.True(json.RootElement.GetProperty("four_bit_weights_bytes").GetInt64() > 0, stdout);
        Assert.False(Directory.Exists(output), "a dry run must not create the output folder");
    }

    [Fact]
    public void Train_writes_adapter_metrics_and_loss_curve()
    {
        using var root = CliRunner.TempFolder("train");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string output = Path.Combine(root, "out");

        var (code, stdout, stderr) = CliRunner.Run("train", "--model", model, "--data", data, "--output", output,
            "--steps", "4", "--batch-size", "2", "--max-length", "32", "--rank", "4", "--lr", "1e-2");

        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains(Path.Combine(output, "adapter"), stdout);
        Assert.True(File.Exists(Path.Combine(output, "adapter", PeftAdapterFile.ConfigFileName)));
        Assert.True(File.Exists(Path.Combine(output, "adapter", PeftAdapterFile.WeightsFileName)));
        var lines = File.ReadAllLines(Path.Combine(output, "metrics.jsonl"));
        Assert.Equal(4, lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            using var json = JsonDocument.Parse(lines[i]);
            Assert.Equal(i + 1, json.RootElement.GetProperty("step").GetInt32());
            Assert.True(float.IsFinite(json.RootElement.GetProperty("loss").GetSingle()), lines[i]);
            Assert.True(json.RootElement.GetProperty("tokens_per_s").GetDouble() > 0, lines[i]);
            Assert.True(json.RootElement.TryGetProperty("lr", out _) && json.RootElement.TryGetProperty("elapsed_s", out _), lines[i]);
        }
        var svg = XDocument.Load(Path.Combine(output, "loss.svg"));
        var polylines = svg.Descendants().Where(e => e.Name.LocalName == "polyline").ToList();
        Assert.Contains(polylines, p => (string?)p.Attribute("class") == "raw" && p.Attribute("points")!.Value.Split(' ').Length == 4);
        Assert.Contains(polylines, p => (string?)p.Attribute("class") == "smoothed");
        Assert.Contains("4/4", stderr); // the progress bar reached the end
        Assert.Contains("QLoRA (NF4", stderr);
        Assert.Contains("memory: predicted peak", stderr);
        Assert.Contains("memory after load: peak resident set", stderr);
        using (var last = JsonDocument.Parse(lines[^1])) Assert.True(last.RootElement.GetProperty("peak_rss_mb").GetDouble() > 10, lines[^1]);

        // The adapter loads back: inspect lists its LoRA tensors, generate applies it.
        var inspect = CliRunner.Run("inspect", Path.Combine(output, "adapter"));
        Assert.Equal(0, inspect.Code);
        Assert.Contains("PEFT adapter (LoRA r=4", inspect.Stdout);
        Assert.Contains("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", inspect.Stdout);
        var generate = CliRunner.Run("generate", "--model", model, "--adapter", Path.Combine(output, "adapter"), "--quant", "nf4",
            "--prompt", "The robot", "--max-tokens", "5", "--temperature", "0");
        Assert.True(generate.Code == 0, generate.Stderr);
        Assert.StartsWith("The robot", generate.Stdout);
        Assert.Contains("adapter", generate.Stderr);
    }

    [Fact]
    public void Merged_folder_computes_the_logits_of_the_model_with_its_adapter()
    {
        using var root = CliRunner.TempFolder("merge");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string adapter = Path.Combine(root, "adapter");
        float[] expected;
        using (var llama = HuggingFaceLlama.Load(model))
        {
            var peft = PeftModel.Create(llama, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear, Seed = 3 });
            var random = new Random(5);
            foreach (var (_, layer) in peft.LoRALayers) // B starts at zero (a no-op): give it values so the merge matters
                foreach (ref float b in layer.LoraB("default").AsSpan()) b = (float)(random.NextDouble() - 0.5) * 0.2f;
            PeftAdapterFile.Save(peft, adapter);
            expected = Logits(llama);
            using (peft.DisableAdapters())
                Assert.True(MaxDifference(Logits(llama), expected) > 1e-3, "the adapter should change the logits");
            peft.MergeAndUnload();
            Assert.True(MaxDifference(Logits(llama), expected) < 1e-4, "PeftModel's own merge");
        }

        string merged = Path.Combine(root, "merged");
        var (code, stdout, stderr) = CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", merged);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Equal(Path.GetFullPath(merged), stdout.Trim());
        Assert.True(File.Exists(Path.Combine(merged, "tokenizer.bin")), "the tokenizer is copied with the merged model");
        using var reloaded = HuggingFaceLlama.Load(merged);
        double error = MaxDifference(Logits(reloaded), expected);
        Assert.True(error < 1e-4, $"merged folder logits differ from the adapted model's by up to {error:E2}");

        var refuse = CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", model);
        Assert.Equal(1, refuse.Code);
        Assert.Contains("overwrite the base", refuse.Stderr);
    }

    [Fact]
    public void Merge_of_a_truncated_base_exits_1_naming_the_file_and_changes_no_output()
    {
        using var root = CliRunner.TempFolder("merge-truncated");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string adapter = Path.Combine(root, "adapter");
        using (var llama = HuggingFaceLlama.Load(model))
            PeftAdapterFile.Save(PeftModel.Create(llama, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear, UseDoRA = true }), adapter);
        string previous = Path.Combine(root, "previous");
        Assert.Equal(0, CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", previous, "--dtype", "bfloat16").Code);
        var before = Directory.EnumerateFiles(previous).Order().Select(File.ReadAllBytes).ToList();

        string weights = Path.Combine(model, HuggingFaceLlama.WeightsFileName);
        using (var stream = new FileStream(weights, FileMode.Open)) stream.SetLength(stream.Length - 100); // the last tensor's data is cut
        foreach (var output in new[] { previous, Path.Combine(root, "fresh") })
        {
            var (code, stdout, stderr) = CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", output, "--dtype", "bfloat16");
            Assert.True(code == 1, $"exit {code}: {stderr}");
            Assert.Empty(stdout);
            Assert.Contains(weights, stderr);
        }
        Assert.Equal(before, Directory.EnumerateFiles(previous).Order().Select(File.ReadAllBytes).ToList());
        Assert.False(Directory.Exists(Path.Combine(root, "fresh")), "a failed merge creates no output folder");
    }

    [Fact]
    public void Inspect_prints_tensors_shapes_dtypes_and_parameter_counts()
    {
        using var root = CliRunner.TempFolder("inspect");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        long parameters;
        using (var llama = new LlamaForCausalLM(CliRunner.TinyConfig, 1)) parameters = llama.CountParameters().Total;

        var (code, stdout, stderr) = CliRunner.Run("inspect", model);
        Assert.True(code == 0, stderr);
        Assert.Contains("Hugging Face model (2 layers, hidden 32", stdout);
        var embed = stdout.Split('\n').Single(l => l.StartsWith("model.embed_tokens.weight ", StringComparison.Ordinal));
        Assert.Contains("F32", embed);
        Assert.Contains($"[{CliRunner.TinyVocab}, 32]", embed);
        Assert.Contains((CliRunner.TinyVocab * 32).ToString("N0", CultureInfo.InvariantCulture), embed);
        Assert.Contains("[32, 64]", stdout.Split('\n').Single(l => l.StartsWith("model.layers.0.mlp.down_proj.weight ", StringComparison.Ordinal)));
        Assert.Contains($"total: {2 * 9 + 2} tensors, {parameters.ToString("N0", CultureInfo.InvariantCulture)} parameters (F32 {parameters.ToString("N0", CultureInfo.InvariantCulture)})", stdout);

        // A bare safetensors file, stored in bfloat16 by convert.
        string bf16 = Path.Combine(root, "bf16");
        using (var llama = new LlamaForCausalLM(CliRunner.TinyConfig, 1)) HuggingFaceLlama.Save(llama, bf16, DType.BFloat16);
        var file = CliRunner.Run("inspect", Path.Combine(bf16, "model.safetensors"));
        Assert.Equal(0, file.Code);
        Assert.Contains("safetensors file metadata format=pt", file.Stdout);
        Assert.Contains($"(BF16 {parameters.ToString("N0", CultureInfo.InvariantCulture)})", file.Stdout);
    }

    [Fact]
    public void Usage_errors_exit_with_2()
    {
        foreach (var args in new[] { ["train", "--steps", "ten"], ["merge"], ["inspect"], ["frobnicate"], new[] { "train", "--model", "m", "--data", "d", "--quant", "int3" } })
        {
            var (code, stdout, stderr) = CliRunner.Run(args);
            Assert.True(code == 2, $"peftgen {string.Join(' ', args)} exited {code}: {stderr}");
            Assert.Empty(stdout);
            Assert.Contains("--help", stderr);
        }
        var help = CliRunner.Run("train", "--help");
        Assert.Equal(0, help.Code);
        Assert.Contains("--max-length", help.Stdout);
    }

    [Fact]
    public void Missing_files_exit_with_1_naming_the_file()
    {
        using var root = CliRunner.TempFolder("missing");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        var cases = new (string[] Args, string Named)[]
        {
            (["train", "--model", Path.Combine(root, "nope"), "--data", data], Path.Combine(root, "nope")),
            (["train", "--model", model, "--data", Path.Combine(root, "nope.jsonl")], Path.Combine(root, "nope.jsonl")),
            (["merge", "--model", model, "--adapter", Path.Combine(root, "no-adapter"), "--output", Path.Combine(root, "m")], Path.Combine(root, "no-adapter")),
            (["inspect", Path.Combine(root, "nothing.safetensors")], Path.Combine(root, "nothing.safetensors")),
            (["generate", "--model", model, "--tokenizer", Path.Combine(root, "tok.bin")], Path.Combine(root, "tok.bin")),
        };
        foreach (var (args, named) in cases)
        {
            var (code, stdout, stderr) = CliRunner.Run(args);
            Assert.True(code == 1, $"peftgen {string.Join(' ', args)} exited {code}: {stderr}");
            Assert.Empty(stdout);
            Assert.Contains(named, stderr);
        }
        File.Delete(Path.Combine(model, "tokenizer.bin"));
        var noTokenizer = CliRunner.Run("train", "--model", model, "--data", data);
        Assert.Equal(1, noTokenizer.Code);
        Assert.Contains("--tokenizer", noTokenizer.Stderr);
    }

    [Fact]
    public void Cuda_device_exits_with_4()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", "/nonexistent/model.bin", "--device", "cuda");
        Assert.Equal(4, code);
        Assert.Empty(stdout);
        bool cuda = PeftGen.Backends.Cuda.DeviceSelection.IsAvailable(Tensors.Device.Parse("cuda"), out _);
        // Without CUDA the message lists what was searched; with it, generation says it runs on the CPU only.
        Assert.Contains(cuda ? "--device cpu" : "libcuda.so.1", stderr);
        if (!cuda)
        {
            var train = CliRunner.Run("train", "--model", "/nonexistent/model.bin", "--data", "d.jsonl", "--device", "cuda:0");
            Assert.Equal(4, train.Code);
            Assert.Contains("libcuda.so.1", train.Stderr);
        }
        Assert.Equal(1, CliRunner.Run("train", "--model", "m", "--data", "d", "--device", "tpu").Code);
    }

    [StoriesFact]
    public void Stories260K_converts_trains_and_generates_with_the_adapter()
    {
        using var root = CliRunner.TempFolder("stories");
        string folder = Path.Combine(root, "stories260K-hf");
        var convert = CliRunner.Run("convert", "--model", SharedModels.Stories260KCheckpoint!, "--output", folder);
        Assert.True(convert.Code == 0, convert.Stderr);
        Assert.True(File.Exists(Path.Combine(folder, "tokenizer.bin")), "tok512.bin is found beside the checkpoint and copied");

        // The converted folder generates what the checkpoint does (q/k rows permuted for rotate-half RoPE).
        var base_ = CliRunner.Run("generate", "--model", folder, "--max-tokens", "20", "--temperature", "0");
        Assert.StartsWith("Once upon a time, there was a little girl named Lily.", base_.Stdout);

        string data = Path.Combine(root, "robot.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $"{{\"text\": \"Once upon a time, there was a robot named Zip. Zip liked to play {i}.\"}}"));
        string output = Path.Combine(root, "out");
        var train = CliRunner.Run("train", "--model", folder, "--data", data, "--output", output, "--steps", "3", "--batch-size", "4", "--max-length", "64", "--lr", "3e-3");
        Assert.True(train.Code == 0, train.Stderr);
        var losses = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetSingle()).ToList();
        Assert.Equal(3, losses.Count);
        Assert.True(losses[^1] < losses[0], $"loss {string.Join(" → ", losses)} should fall on 8 repeated stories");

        var inspect = CliRunner.Run("inspect", SharedModels.Stories260KCheckpoint!);
        Assert.Contains("llama2.c checkpoint (5 layers, hidden 64", inspect.Stdout);
        Assert.Contains("total: 47 tensors, 260,032 parameters", inspect.Stdout);
        var adapted = CliRunner.Run("generate", "--model", folder, "--adapter", Path.Combine(output, "adapter"), "--quant", "nf4", "--max-tokens", "20", "--temperature", "0");
        Assert.True(adapted.Code == 0, adapted.Stderr);
    }

    private static float[] Logits(LlamaForCausalLM model)
    {
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        return model.Forward(Prompt, 1, Prompt.Length).ToArray(); // [1, T, vocab]
    }

    private static double MaxDifference(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
}
