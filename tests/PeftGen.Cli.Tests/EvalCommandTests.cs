using System.Globalization;
using System.Text.Json;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>peftgen eval: loss and perplexity of a model with and without its adapter, as the trainer's evaluation computes them.</summary>
public sealed class EvalCommandTests
{
    [Fact]
    public void Eval_of_a_trained_adapter_gives_a_lower_loss_than_the_base()
    {
        using var root = CliRunner.TempFolder("eval");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string output = Path.Combine(root, "out");
        var train = CliRunner.Run("train", "--model", model, "--data", data, "--output", output, "--quant", "none",
            "--steps", "4", "--batch-size", "2", "--max-length", "32", "--rank", "4", "--lr", "1e-2");
        Assert.True(train.Code == 0, $"train exit {train.Code}: {train.Stderr}");

        var baseRun = CliRunner.Run("eval", "--model", model, "--data", data, "--max-length", "32");
        Assert.True(baseRun.Code == 0, $"exit {baseRun.Code}: {baseRun.Stderr}");
        var adapted = CliRunner.Run("eval", "--model", model, "--adapter", Path.Combine(output, "adapter"), "--data", data, "--max-length", "32");
        Assert.True(adapted.Code == 0, $"exit {adapted.Code}: {adapted.Stderr}");

        var (baseLoss, rows) = ParseText(baseRun.Stdout);
        var (adapterLoss, adapterRows) = ParseText(adapted.Stdout);
        Assert.Equal(8, rows);
        Assert.Equal(8, adapterRows);
        Assert.True(float.IsFinite(baseLoss) && float.IsFinite(adapterLoss), $"{baseRun.Stdout} / {adapted.Stdout}");
        Assert.True(adapterLoss < baseLoss, $"the adapter's loss {adapterLoss} should be below the base's {baseLoss}");
        Assert.Contains("adapter", adapted.Stderr);
    }

    [Fact]
    public void Json_output_parses_and_perplexity_is_exp_of_the_loss()
    {
        using var root = CliRunner.TempFolder("eval-json");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));

        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", model, "--data", data, "--json", "--batch-size", "3");

        Assert.True(code == 0, $"exit {code}: {stderr}");
        using var json = JsonDocument.Parse(stdout);
        double loss = json.RootElement.GetProperty("loss").GetDouble();
        double perplexity = json.RootElement.GetProperty("perplexity").GetDouble();
        Assert.True(double.IsFinite(loss) && loss > 0, stdout);
        Assert.True(Math.Abs(perplexity - Math.Exp(loss)) <= 1e-5 * Math.Exp(loss), stdout);
        Assert.Equal(8, json.RootElement.GetProperty("rows").GetInt32());
        // Plain text scores every token after the first (BOS … EOS): the same count as the dataset's labels give.
        Assert.True(json.RootElement.GetProperty("tokens").GetInt64() > 8 * 10, stdout);
        Assert.Single(stdout.Trim().Split('\n'));
    }

    [Fact]
    public void Eval_loss_equals_the_trainers_evaluation_of_the_same_rows()
    {
        using var root = CliRunner.TempFolder("eval-trainer");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));

        // 8 rows in batches of 3: the last batch is completed from the start, as the trainer's eval batches are.
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", model, "--data", data, "--json", "--batch-size", "3", "--max-length", "32");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        using var json = JsonDocument.Parse(stdout);
        float cliLoss = (float)json.RootElement.GetProperty("loss").GetDouble();

        // The trainer's own evaluation on the same rows: a LoRA adapter with B = 0 leaves the model's outputs unchanged.
        using var pretrained = PretrainedModel.Load(model, options: new ModelLoadOptions { FrozenWeights = FrozenWeightStorage.AsStored });
        var llama = pretrained.Model;
        PeftModel.Create(llama, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear });
        var dataset = Data.JsonlDataset.Load(data, pretrained.Tokenizer, new Data.JsonlDatasetOptions { MaxSequenceLength = 32 });
        var eval = dataset.CreateBatchSource(3, 32, seed: 0, shuffle: false);
        var train = dataset.CreateBatchSource(3, 32, seed: 0);
        using var trainer = new Trainer(llama, b => llama.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), train,
            new TrainerOptions { MaxSteps = 1, EvalBatches = eval.BatchesPerEpoch }, eval);
        float trainerLoss = trainer.Evaluate();

        Assert.Equal(3, eval.BatchesPerEpoch);
        Assert.Equal(trainerLoss, cliLoss);
    }

    [Fact]
    public void Bad_settings_and_a_missing_data_file_exit_1_naming_them()
    {
        using var root = CliRunner.TempFolder("eval-misuse");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string missing = Path.Combine(root, "missing.jsonl");
        foreach (var (args, named) in new (string[], string)[]
        {
            (["--data", data, "--max-length", "0"], "--max-length"),
            (["--data", data, "--batch-size", "0"], "--batch-size"),
            (["--data", data, "--max-length", "65"], "--max-length"),
            (["--data", missing], missing),
            (["--data", data, "--adapter", Path.Combine(root, "no-adapter")], "--adapter"),
        })
        {
            var (code, stdout, stderr) = CliRunner.Run(["eval", "--model", model, .. args]);
            Assert.True(code == 1, $"{string.Join(' ', args)}: exit {code}: {stderr}");
            Assert.Contains(named, stderr);
            Assert.DoesNotContain("   at ", stderr);
            Assert.Equal("", stdout);
        }
    }

    /// <summary>"loss X, perplexity Y over N tokens in M rows" → (X, M).</summary>
    private static (float Loss, int Rows) ParseText(string stdout)
    {
        var words = stdout.Trim().Split(' ');
        Assert.True(words.Length == 10 && words[0] == "loss" && words[2] == "perplexity" && words[^1] == "rows", stdout);
        return (float.Parse(words[1].TrimEnd(','), CultureInfo.InvariantCulture), int.Parse(words[^2], CultureInfo.InvariantCulture));
    }
}
