using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>
/// train --method refuses, before anything loads, options that do not apply to the method and settings the method cannot
/// take, naming the option and the method; the adapter commands refuse folders they cannot read, naming the folder.
/// </summary>
public class MethodMisuseTests
{
    private static (int Code, string Stdout, string Stderr) Train(string root, params string[] extra)
    {
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string[] maxLength = extra.Contains("--max-length") ? [] : ["--max-length", "32"];
        return CliRunner.Run(["train", "--model", model, "--data", data, "--output", Path.Combine(root, "out"), "--steps", "2", .. maxLength, .. extra]);
    }

    /// <summary>Exit code 1, one error line naming each of <paramref name="mentions"/>, no stack trace, nothing on stdout.</summary>
    private static void AssertBadInput((int Code, string Stdout, string Stderr) run, params string[] mentions)
    {
        Assert.True(run.Code == 1, $"exit {run.Code}: {run.Stderr}");
        Assert.DoesNotContain("   at ", run.Stderr);
        Assert.DoesNotContain("(Parameter '", run.Stderr);
        Assert.Equal("", run.Stdout);
        var error = run.Stderr.Split('\n').Single(l => l.StartsWith("error: ", StringComparison.Ordinal));
        foreach (var mention in mentions) Assert.Contains(mention, error);
    }

    public static TheoryData<string[], string[]> NotApplicable => new()
    {
        { ["--method", "vera", "--lora-alpha", "16"], ["--lora-alpha does not apply to --method vera", "lora, qlora"] },
        { ["--method", "ia3", "--num-virtual-tokens", "4"], ["--num-virtual-tokens does not apply to --method ia3", "prompt, prefix, p-tuning"] },
        { ["--method", "prompt", "--quant", "nf4"], ["--quant nf4 does not apply to --method prompt", "lora, qlora, dora, lora-fa, vera"] },
        { ["--method", "bottleneck", "--target-modules", "q_proj"], ["--target-modules does not apply to --method bottleneck"] },
        { ["--method", "lora-fa", "--dora"], ["--dora does not apply to --method lora-fa"] },
        { ["--method", "prefix", "--layerwise-lr-decay", "0.9"], ["--layerwise-lr-decay does not apply to --method prefix"] },
        { ["--method", "sparse", "--dry-run"], ["--dry-run does not apply to --method sparse"] },
        { ["--method", "lora", "--d-initial", "0.5"], ["--d-initial does not apply to --method lora", "vera"] },
        { ["--rank", "4", "--bottleneck-size", "8"], ["--bottleneck-size does not apply to --method qlora"] },
        { ["--method", "delta-lora", "--quant", "nf4"], ["--quant nf4 does not apply to --method delta-lora", "--quant none"] },
        { ["--method", "delta-lora", "--dropout", "0.1"], ["--dropout 0.1", "Delta-LoRA trains without dropout"] },
        { ["--method", "prompt", "--prompt-tuning-init", "TEXT"], ["--prompt-tuning-init-text"] },
        { ["--method", "prefix", "--encoder-hidden-size", "16"], ["--prefix-projection"] },
        { ["--method", "sparse", "--sparse-score", "none"], ["--sparse-score none", "--sparse-fraction 1"] },
        { ["--method", "vera", "--d-initial", "0"], ["--d-initial 0"] },
        { ["--method", "bottleneck", "--layer-drop", "1"], ["--layer-drop 1", "[0, 1)"] },
        { ["--method", "lora", "--layers-to-transform", "0,x"], ["--layers-to-transform", "'x'"] },
        { ["--method", "prompt", "--num-virtual-tokens", "64"], ["--num-virtual-tokens 64", "context is 64"] },
        { ["--method", "prompt", "--num-virtual-tokens", "40", "--max-length", "32"], ["--max-length 32", "40 virtual tokens"] },
        // A setting the runtime checks against the model, reported in the method's terms.
        { ["--method", "bottleneck", "--bottleneck-size", "64"], ["--method bottleneck", "exceeds the hidden size 32"] },
        { ["--method", "ia3", "--target-modules", "q_proj", "--feedforward-modules", "down_proj"], ["--method ia3", "down_proj"] },
    };

    [Theory]
    [MemberData(nameof(NotApplicable))]
    public void Options_that_do_not_apply_or_cannot_work_exit_1_naming_the_option_and_the_method(string[] args, string[] mentions)
    {
        using var root = CliRunner.TempFolder("method-misuse");
        AssertBadInput(Train(root, args), mentions);
        Assert.False(Directory.Exists(Path.Combine(root, "out", "adapter")));
    }

    [Fact]
    public void An_unknown_method_is_a_usage_error()
    {
        using var root = CliRunner.TempFolder("method-unknown");
        var (code, stdout, stderr) = Train(root, "--method", "loha");
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains("loha", stderr);
    }

    [Fact]
    public void Quant_none_and_the_companions_are_accepted_where_they_apply()
    {
        using var root = CliRunner.TempFolder("method-companions");
        var (code, _, stderr) = Train(root, "--method", "ia3", "--quant", "none", "--layer-drop", "0.1", "--layerwise-lr-decay", "0.9", "--batch-size", "2");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("adapter: IA3 on", stderr);
        Assert.Contains("layer drop", stderr);
    }

    [Fact]
    public void Adapter_folders_are_detected_from_their_files_and_unreadable_ones_are_refused()
    {
        using var root = CliRunner.TempFolder("adapter-detect");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string Folder(string name, string? config, params string[] files)
        {
            string folder = Path.Combine(root, name);
            Directory.CreateDirectory(folder);
            if (config != null) File.WriteAllText(Path.Combine(folder, "adapter_config.json"), config);
            foreach (var file in files) File.WriteAllBytes(Path.Combine(folder, file), []);
            return folder;
        }
        string loha = Folder("loha", """{"peft_type": "LOHA"}""");
        string noType = Folder("no-type", """{"r": 8}""");
        string broken = Folder("broken", "{");
        string empty = Folder("empty", null);
        string delta = Folder("delta", """{"peft_type": "LORA"}""", "delta_lora_base.safetensors");
        string sparse = Folder("sparse", null, "sparse_delta.safetensors");

        Assert.Equal(AdapterKind.DeltaLoRA, AdapterFolders.Detect(delta).Kind);
        Assert.Equal(AdapterKind.Sparse, AdapterFolders.Detect(sparse).Kind);
        foreach (var (folder, mention) in new[]
        {
            (loha, "peft_type \"LOHA\" is not a method PeftGen reads"), (noType, "no \"peft_type\""), (broken, "not valid JSON"),
            (empty, "no adapter_config.json"), (Path.Combine(root, "missing"), "no such folder"),
        })
        {
            AssertBadInput(CliRunner.Run("generate", "--model", model, "--adapter", folder, "--max-tokens", "2"), "--adapter", mention);
            AssertBadInput(CliRunner.Run("eval", "--model", model, "--adapter", folder, "--data", data), "--adapter", mention);
            AssertBadInput(CliRunner.Run("merge", "--model", model, "--adapter", folder, "--output", Path.Combine(root, "merged")), "--adapter", mention);
        }
        // Adapters that changed base weights need them in float32.
        AssertBadInput(CliRunner.Run("generate", "--model", model, "--adapter", delta, "--quant", "nf4"), "--quant nf4", "Delta-LoRA", "--quant none");
        AssertBadInput(CliRunner.Run("eval", "--model", model, "--adapter", sparse, "--quant", "fp4", "--data", data), "--quant fp4", "sparse", "--quant none");
    }
}
