using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Tests.TestSupport;
using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>Bad input and misuse end in exit 1 with a clear message: no stack trace, no runaway allocation, no lost files.</summary>
public class InputMisuseTests
{
    private static void AssertBadInput((int Code, string Stdout, string Stderr) result, params string[] mentions)
    {
        Assert.True(result.Code == 1, $"exit {result.Code}: {result.Stderr}");
        Assert.Contains("error: ", result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.DoesNotContain("internal error", result.Stderr);
        Assert.True(result.Stderr.Length < 4000, $"a {result.Stderr.Length}-character message");
        foreach (var m in mentions) Assert.Contains(m, result.Stderr);
    }

    private static string Doctor(string folder, string key, long value)
    {
        string path = Path.Combine(folder, HuggingFaceLlama.ConfigFileName);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        json[key] = value;
        File.WriteAllText(path, json.ToJsonString());
        return path;
    }

    private static string Adapter(string model, string folder, Action<PeftModel<PeftGen.Models.Llama.LlamaForCausalLM>>? change = null, int rank = 4)
    {
        using var llama = HuggingFaceLlama.Load(model);
        var peft = PeftModel.Create(llama, new LoRAConfig { Rank = rank, Alpha = 8, Targets = TargetModules.AllLinear, Seed = 3 });
        change?.Invoke(peft);
        PeftAdapterFile.Save(peft, folder);
        return folder;
    }

    [Theory]
    [InlineData(1_000_000_000L)]
    [InlineData(100_000L)]
    public void Generate_and_inspect_refuse_a_config_with_absurd_layers_quickly(long layers)
    {
        using var root = CliRunner.TempFolder("layers");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        Doctor(model, "num_hidden_layers", layers);
        var watch = Stopwatch.StartNew();
        AssertBadInput(CliRunner.Run("generate", "--model", model, "--prompt", "a", "--max-tokens", "2"), "num_hidden_layers", "config.json");
        AssertBadInput(CliRunner.Run("inspect", model), "num_hidden_layers");
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"took {watch.Elapsed}");
    }

    [Fact]
    public void Inspect_reports_a_config_whose_sizes_disagree_with_the_tensors()
    {
        using var root = CliRunner.TempFolder("inspect-doctored");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string adapter = Adapter(model, Path.Combine(root, "adapter"));
        Doctor(model, "hidden_size", 1_000_000_000);
        AssertBadInput(CliRunner.Run("inspect", model), "hidden_size");

        string config = Path.Combine(adapter, PeftAdapterFile.ConfigFileName);
        var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        json["r"] = 16;
        File.WriteAllText(config, json.ToJsonString());
        AssertBadInput(CliRunner.Run("inspect", adapter), "rank 4", "says 16");
    }

    [Fact]
    public void A_20MB_jsonl_line_is_refused_naming_the_file_and_line()
    {
        using var root = CliRunner.TempFolder("long-line");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = Path.Combine(root, "data.jsonl");
        File.WriteAllText(data, "{\"text\": \"short\"}\n{\"text\": \"" + new string('a', 20 * 1024 * 1024) + "\"}\n");
        AssertBadInput(CliRunner.Run("train", "--model", model, "--data", data, "--output", Path.Combine(root, "out"), "--max-length", "16", "--steps", "1"),
            "data.jsonl", "line 2");
    }

    [Fact]
    public void Dev_zero_as_data_is_refused()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var root = CliRunner.TempFolder("dev-zero");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        AssertBadInput(CliRunner.Run("train", "--model", model, "--data", "/dev/zero", "--output", Path.Combine(root, "out"), "--max-length", "16", "--steps", "1"),
            "/dev/zero", "line 1");
    }

    [Fact]
    public void Adapter_with_an_out_of_range_or_nan_alpha_is_refused()
    {
        using var root = CliRunner.TempFolder("alpha");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string adapter = Adapter(model, Path.Combine(root, "adapter"));
        string config = Path.Combine(adapter, PeftAdapterFile.ConfigFileName);
        string text = File.ReadAllText(config);
        foreach (var alpha in new[] { "1e309", "1e39", "NaN", "\"NaN\"" })
        {
            File.WriteAllText(config, System.Text.RegularExpressions.Regex.Replace(text, "\"lora_alpha\":\\s*[^,}]+", $"\"lora_alpha\": {alpha}"));
            AssertBadInput(CliRunner.Run("generate", "--model", model, "--adapter", adapter, "--prompt", "a", "--max-tokens", "2"), "adapter_config.json");
            AssertBadInput(CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", Path.Combine(root, "merged")), "adapter_config.json");
            Assert.False(Directory.Exists(Path.Combine(root, "merged")));
        }
    }

    [Fact]
    public void Adapter_with_nan_weights_is_refused_by_generate_and_merge()
    {
        using var root = CliRunner.TempFolder("nan-weights");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string adapter = Adapter(model, Path.Combine(root, "adapter"), peft =>
        {
            foreach (var (_, layer) in peft.LoRALayers) layer.LoraB("default").AsSpan()[3] = float.NaN;
        });
        AssertBadInput(CliRunner.Run("generate", "--model", model, "--adapter", adapter, "--prompt", "a", "--max-tokens", "2"), "NaN", "lora_B");
        string merged = Path.Combine(root, "merged");
        AssertBadInput(CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", merged), "NaN", "adapter_model.safetensors");
        Assert.False(File.Exists(Path.Combine(merged, HuggingFaceLlama.WeightsFileName)));
    }

    [StoriesFact]
    public void Convert_refuses_a_truncated_tokenizer_and_writes_nothing()
    {
        using var root = CliRunner.TempFolder("truncated-tokenizer");
        string tokenizer = Path.Combine(root, "tok512.bin");
        var bytes = File.ReadAllBytes(SharedModels.Stories260KTokenizer!);
        File.WriteAllBytes(tokenizer, bytes[..(bytes.Length / 2)]);
        string output = Path.Combine(root, "out");
        AssertBadInput(CliRunner.Run("convert", "--model", SharedModels.Stories260KCheckpoint!, "--tokenizer", tokenizer, "--output", output), "tok512.bin");
        Assert.False(Directory.Exists(output), "nothing is written when the tokenizer is bad");
    }

    [Fact]
    public void Merge_output_that_reaches_the_base_folder_is_refused_and_the_base_is_unchanged()
    {
        using var root = CliRunner.TempFolder("merge-link");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string adapter = Adapter(model, Path.Combine(root, "adapter"));
        var before = Directory.GetFiles(model).ToDictionary(f => f, File.ReadAllBytes);
        string link = Path.Combine(root, "link");
        Directory.CreateSymbolicLink(link, model);
        AssertBadInput(CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", link), "--output", "--model");
        AssertBadInput(CliRunner.Run("merge", "--model", link, "--adapter", adapter, "--output", model + "/"), "--output");
        AssertBadInput(CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", Path.Combine(model, "merged")), "inside", "--model");
        AssertBadInput(CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", Path.Combine(link, "merged")), "inside");
        AssertBadInput(CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--output", adapter), "--adapter");
        foreach (var (file, content) in before) Assert.Equal(content, File.ReadAllBytes(file));
        Assert.Equal(before.Keys.Order(), Directory.GetFiles(model).Order());
        Assert.False(Directory.Exists(Path.Combine(model, "merged")));
    }
}
