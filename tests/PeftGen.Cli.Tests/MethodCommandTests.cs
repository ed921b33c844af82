using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.TestSupport;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>
/// <c>peftgen train --method M</c> for every method on stories260K: a few steps from the command line, then the adapter
/// folder loads back (generate's and eval's loader, which reads the method from the folder) with the logits and the eval
/// loss of the model that was trained in memory, generate and eval run with it, and merge folds it into a model folder
/// with the same logits, or refuses the methods that cannot be merged.
/// </summary>
public class MethodCommandTests
{
    private const string Text = "Once upon a time, there was a little dog";

    /// <summary>Method, its extra options (the method's settings, companions in some rows), whether merge folds it in.</summary>
    public static TheoryData<string, string[], bool> Methods => new()
    {
        { "lora", ["--rank", "4", "--layerwise-lr-decay", "0.9"], true },
        { "qlora", ["--r", "4", "--lora-alpha", "8", "--target-modules", "q_proj,v_proj,down_proj"], true },
        { "dora", ["--r", "4", "--lora-dropout", "0"], true },
        { "lora-fa", ["--rank", "4", "--lora-fa-gradient-correction", "--lora-plus", "4"], true },
        { "delta-lora", ["--rank", "4", "--delta-lora-start-step", "1", "--delta-lora-update-ratio", "2"], true },
        // VeRA's shared projection cannot follow a llama2.c checkpoint's q/k row order, so it adapts other layers.
        { "vera", ["--r", "16", "--target-modules", "v_proj,o_proj,down_proj", "--d-initial", "0.2", "--projection-prng-key", "3"], true },
        { "ia3", ["--target-modules", "k_proj,v_proj,down_proj", "--feedforward-modules", "down_proj"], true },
        { "prompt", ["--num-virtual-tokens", "4", "--prompt-tuning-init", "TEXT", "--prompt-tuning-init-text", "Once upon a time"], false },
        { "prefix", ["--num-virtual-tokens", "4", "--prefix-projection", "--encoder-hidden-size", "16"], false },
        { "p-tuning", ["--num-virtual-tokens", "4", "--encoder-hidden-size", "16"], false },
        { "bottleneck", ["--bottleneck-size", "8", "--non-linearity", "gelu", "--layer-drop", "0.2", "--layer-drop-schedule", "linear"], false },
        { "sparse", ["--sparse-fraction", "0.05", "--calibration-batches", "1", "--layerwise-lr-decay", "0.8"], true },
    };

    [StoriesTheory]
    [MemberData(nameof(Methods))]
    public void Each_method_trains_from_the_cli_and_its_adapter_reloads_with_the_trained_logits(string method, string[] extra, bool merges)
    {
        using var root = CliRunner.TempFolder("method-" + method);
        string model = SharedModels.Stories260KCheckpoint!, tokenizer = SharedModels.Stories260KTokenizer!;
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string output = Path.Combine(root, "out"), adapter = Path.Combine(output, "adapter");
        string[] quant = method == "qlora" ? ["--quant", "nf4"] : [];

        float[]? trained = null;
        float trainedEval = float.NaN;
        TrainCommand.AfterTrainingForTests = adapted =>
        {
            var lm = adapted.CausalLM!;
            trained = Logits(lm, Ids(lm));
            trainedEval = EvalLoss(lm, data);
        };
        (int Code, string Stdout, string Stderr) train;
        try
        {
            train = CliRunner.Run(["train", "--method", method, "--model", model, "--tokenizer", tokenizer, "--data", data, "--output", output,
                "--steps", "3", "--batch-size", "2", "--max-length", "32", "--lr", "1e-2", .. extra]);
        }
        finally
        {
            TrainCommand.AfterTrainingForTests = null;
        }
        Assert.True(train.Code == 0, $"train --method {method}: exit {train.Code}: {train.Stderr}");
        Assert.NotNull(trained);
        Assert.Contains("3/3", train.Stderr);
        Assert.Contains($"adapter: {Path.GetFullPath(adapter)}", train.Stdout);
        if (extra.Contains("--layer-drop")) Assert.Contains("layer drop", train.Stderr);

        // The folder says which method wrote it, and generate's loader applies it as the session trained it.
        var detected = AdapterFolders.Detect(adapter);
        Assert.Equal(ExpectedKind(method), detected.Kind);
        float[] reloaded, baseLogits;
        using (var loaded = AdapterFolders.LoadForInference(model, tokenizer, Device.Cpu, adapter, CommonOptions.Quantization(quant.Length > 0 ? "nf4" : "none")))
            reloaded = Logits(loaded.Model, Ids(loaded.Model));
        using (var plain = AdapterFolders.LoadForInference(model, tokenizer, Device.Cpu, null, null))
            baseLogits = Logits(plain.Model, Ids(plain.Model));
        double error = MaxDifference(reloaded, trained!);
        Assert.True(error < 1e-4, $"{method}: the reloaded adapter's logits differ from the trained model's by up to {error:E2}");
        Assert.True(MaxDifference(baseLogits, trained!) > 1e-3, $"{method}: three steps at lr 1e-2 should change the logits");

        var generate = CliRunner.Run(["generate", "--model", model, "--tokenizer", tokenizer, "--adapter", adapter, .. quant,
            "--prompt", "Once upon a time", "--max-tokens", "8", "--temperature", "0"]);
        Assert.True(generate.Code == 0, $"generate --adapter ({method}): exit {generate.Code}: {generate.Stderr}");
        Assert.StartsWith("Once upon a time", generate.Stdout);
        Assert.Contains($"adapter {adapter}: ", generate.Stderr);

        // eval computes with the reloaded adapter what the trainer's evaluation computed with the trained model.
        var eval = CliRunner.Run(["eval", "--model", model, "--tokenizer", tokenizer, "--adapter", adapter, .. quant, "--data", data, "--max-length", "32", "--json"]);
        Assert.True(eval.Code == 0, $"eval --adapter ({method}): exit {eval.Code}: {eval.Stderr}");
        using (var json = JsonDocument.Parse(eval.Stdout))
        {
            double loss = json.RootElement.GetProperty("loss").GetDouble();
            Assert.True(Math.Abs(loss - trainedEval) <= 1e-4 * Math.Max(1, trainedEval), $"{method}: eval --adapter {loss} vs the trained model's {trainedEval}");
        }

        string merged = Path.Combine(root, "merged");
        var merge = CliRunner.Run("merge", "--model", model, "--tokenizer", tokenizer, "--adapter", adapter, "--output", merged);
        if (!merges)
        {
            Assert.True(merge.Code == 1, $"merge ({method}): exit {merge.Code}: {merge.Stderr}");
            Assert.Contains("cannot be merged", merge.Stderr);
            Assert.Equal("", merge.Stdout);
            Assert.False(File.Exists(Path.Combine(merged, HuggingFaceLlama.WeightsFileName)));
            return;
        }
        Assert.True(merge.Code == 0, $"merge ({method}): exit {merge.Code}: {merge.Stderr}");
        float[] expected = reloaded;
        if (quant.Length > 0) // merge folds a QLoRA adapter into the full-precision base
            using (var full = AdapterFolders.LoadForInference(model, tokenizer, Device.Cpu, adapter, null))
                expected = Logits(full.Model, Ids(full.Model));
        using var mergedModel = HuggingFaceLlama.Load(merged);
        double mergeError = MaxDifference(Logits(mergedModel, Ids(mergedModel)), expected);
        Assert.True(mergeError < 1e-4, $"{method}: the merged folder's logits differ from the adapted model's by up to {mergeError:E2}");
    }

    [StoriesFact]
    public void Vera_on_the_q_and_k_rows_of_a_llama2c_checkpoint_is_refused_before_training()
    {
        using var root = CliRunner.TempFolder("method-vera-qk");
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string output = Path.Combine(root, "out");
        var (code, stdout, stderr) = CliRunner.Run("train", "--method", "vera", "--model", SharedModels.Stories260KCheckpoint!, "--tokenizer", SharedModels.Stories260KTokenizer!,
            "--data", data, "--output", output, "--steps", "2", "--max-length", "32");
        Assert.True(code == 1, $"exit {code}: {stderr}");
        Assert.Contains("--method vera adapts model.layers.0.self_attn.q_proj", stderr);
        Assert.Contains("--target-modules", stderr);
        Assert.DoesNotContain("   at ", stderr);
        Assert.Equal("", stdout);
        Assert.False(Directory.Exists(Path.Combine(output, "adapter")));
    }

    private static AdapterKind ExpectedKind(string method) => method switch
    {
        "lora" or "qlora" or "dora" or "lora-fa" => AdapterKind.LoRA,
        "delta-lora" => AdapterKind.DeltaLoRA,
        "vera" => AdapterKind.VeRA,
        "ia3" => AdapterKind.IA3,
        "prompt" or "prefix" or "p-tuning" => AdapterKind.PromptLearning,
        "bottleneck" => AdapterKind.Bottleneck,
        _ => AdapterKind.Sparse,
    };

    private static int[] Ids(LlamaForCausalLM model) =>
        PretrainedModel.LoadTokenizer(SharedModels.Stories260KTokenizer!, model.Config.VocabSize).Encode(Text, addBos: true);

    private static float[] Logits(LlamaForCausalLM model, int[] ids)
    {
        model.Eval();
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        return model.Forward(ids, 1, ids.Length).ToArray(); // [1, T, vocab]
    }

    /// <summary>What eval computes: every row once, in file order, batches of 4 (eval's default), the trainer's evaluation.</summary>
    private static float EvalLoss(LlamaForCausalLM model, string data)
    {
        var tokenizer = PretrainedModel.LoadTokenizer(SharedModels.Stories260KTokenizer!, model.Config.VocabSize);
        var dataset = JsonlDataset.Load(data, tokenizer, new JsonlDatasetOptions { MaxSequenceLength = 32 });
        var batches = dataset.CreateBatchSource(4, 32, seed: 0, pack: false, shuffle: false);
        return Trainer.EvaluateLoss(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), batches, batches.BatchesPerEpoch);
    }

    private static double MaxDifference(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        return a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
    }
}
