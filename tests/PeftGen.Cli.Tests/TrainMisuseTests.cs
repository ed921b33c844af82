using System.Text;
using System.Text.Json;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Cli.Tests;

/// <summary>
/// Misuse of train and generate ends in one clear error line naming the option or file (exit code 1), never a stack
/// trace; and a failed or cancelled rerun leaves the previous run's outputs byte-identical.
/// </summary>
public class TrainMisuseTests
{
    /// <summary>train on the tiny model: 4 steps of batch 2 × 32 tokens, rank 4, lr 1e-2, unless <paramref name="extra"/> gives them.</summary>
    private static string[] TrainArgs(string model, string data, string output, params string[] extra)
    {
        var args = new List<string> { "train", "--model", model, "--data", data, "--output", output };
        string[][] defaults = [["--steps", "4"], ["--batch-size", "2"], ["--max-length", "32"], ["--rank", "4"], ["--lr", "1e-2"]];
        foreach (var d in defaults.Where(d => !extra.Contains(d[0]))) args.AddRange(d);
        args.AddRange(extra);
        return args.ToArray();
    }

    private static (string Model, string Data) Setup(string root) =>
        (CliRunner.TinyModelFolder(Path.Combine(root, "model")), CliRunner.TextDataset(Path.Combine(root, "data.jsonl")));

    /// <summary>Exit code 1, no stack trace or internal names, one error line naming each of <paramref name="mentions"/>.</summary>
    private static string AssertBadInput((int Code, string Stdout, string Stderr) run, params string[] mentions)
    {
        Assert.True(run.Code == 1, $"exit {run.Code}: {run.Stderr}");
        Assert.DoesNotContain("   at ", run.Stderr);
        Assert.DoesNotContain("internal error", run.Stderr);
        Assert.DoesNotContain("TrainerOptions", run.Stderr);
        Assert.DoesNotContain("FineTuneOptions", run.Stderr);
        var error = run.Stderr.Split('\n').Single(l => l.StartsWith("error: ", StringComparison.Ordinal));
        Assert.True(error.Length < 600, $"the error line is {error.Length} characters long");
        foreach (var mention in mentions) Assert.Contains(mention, error);
        return error;
    }

    /// <summary>The run's outputs (everything but checkpoints) as relative path → bytes.</summary>
    private static Dictionary<string, byte[]> Outputs(string folder) => Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
        .Select(f => Path.GetRelativePath(folder, f))
        .Where(f => !f.StartsWith("checkpoint-", StringComparison.Ordinal))
        .ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(folder, f)));

    private static void AssertSameOutputs(Dictionary<string, byte[]> before, string folder)
    {
        var after = Outputs(folder);
        Assert.Equal(before.Keys.Order(), after.Keys.Order()); // no staging folder left either
        foreach (var (path, bytes) in before) Assert.True(bytes.AsSpan().SequenceEqual(after[path]), $"{path} changed");
    }

    private static int[] MetricSteps(string output) => File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt32()).ToArray();

    [Fact]
    public void Save_every_writes_checkpoints_and_resume_continues_or_says_why_not()
    {
        using var root = CliRunner.TempFolder("resume");
        var (model, data) = Setup(root);
        string output = Path.Combine(root, "out");

        // --resume with nothing to resume: a clear error before anything is loaded or written.
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, output, "--resume")), "--resume", output, "Drop --resume");
        Assert.False(Directory.Exists(output));

        var first = CliRunner.Run(TrainArgs(model, data, output, "--save-every", "2"));
        Assert.True(first.Code == 0, $"exit {first.Code}: {first.Stderr}");
        Assert.True(File.Exists(Path.Combine(output, "checkpoint-4", "optimizer.bin")));
        Assert.True(Directory.Exists(Path.Combine(output, "checkpoint-2")));

        // The newest checkpoint is at --steps: nothing to train.
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, output, "--resume")), "nothing to train", "checkpoint-4", "--steps 4", "Raise --steps");
        // A fresh run would mix its checkpoints with these.
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, output, "--save-every", "2")), "--resume", "checkpoint-4");

        var resumed = CliRunner.Run(TrainArgs(model, data, output, "--resume", "--save-every", "2", "--steps", "6"));
        Assert.True(resumed.Code == 0, $"exit {resumed.Code}: {resumed.Stderr}");
        Assert.Contains("resuming from", resumed.Stderr);
        Assert.Contains("trained 2 steps (steps 5–6, resumed at step 4)", resumed.Stderr);
        Assert.Equal([1, 2, 3, 4, 5, 6], MetricSteps(output));
    }

    [Fact]
    public void Non_finite_loss_stops_with_the_step_and_the_options_to_change_or_skips()
    {
        using var root = CliRunner.TempFolder("nan");
        var (model, data) = Setup(root);
        string output = Path.Combine(root, "out");

        var stopped = CliRunner.Run(TrainArgs(model, data, output, "--lr", "1e30"));
        var error = AssertBadInput(stopped, "at step ", "--lr", "--on-nan skip", "--max-grad-norm");
        Assert.DoesNotContain("OnNonFinite", error);
        Assert.False(File.Exists(Path.Combine(output, "metrics.jsonl")), "a failed first run leaves no outputs");

        var skipped = CliRunner.Run(TrainArgs(model, data, output, "--lr", "1e30", "--on-nan", "skip"));
        Assert.True(skipped.Code == 0, $"exit {skipped.Code}: {skipped.Stderr}");
        Assert.Contains("steps skipped", skipped.Stderr);
    }

    [Fact]
    public void Numeric_options_are_checked_before_loading_naming_the_option()
    {
        using var root = CliRunner.TempFolder("ranges");
        var (model, data) = Setup(root);
        string output = Path.Combine(root, "out");
        string[][] cases =
        [
            ["--lr", "0"], ["--lr", "-1e-3"], ["--lr", "1e39"], ["--lr", "NaN"], ["--steps", "0"], ["--batch-size", "0"],
            ["--grad-accum", "0"], ["--max-length", "0"], ["--max-length", "100"], ["--warmup", "5"], ["--max-grad-norm", "-1"],
            ["--max-grad-norm", "Infinity"], ["--rank", "0"], ["--alpha", "0"], ["--dropout", "1"], ["--lora-plus", "-2"],
            ["--block-size", "48"], ["--eval-fraction", "1"], ["--eval-every", "-1"], ["--save-every", "-1"], ["--threads", "0"],
        ];
        foreach (var option in cases)
        {
            var run = CliRunner.Run(TrainArgs(model, data, output, option));
            AssertBadInput(run, option[0] + " ");
            Assert.False(Directory.Exists(output), $"{string.Join(' ', option)} created the output folder");
        }

        foreach (var option in (string[][])[["--max-tokens", "-1"], ["--temperature", "-0.5"], ["--temperature", "Infinity"], ["--top-p", "1.5"], ["--top-p", "0"]])
        {
            var run = CliRunner.Run(["generate", "--model", "/nonexistent/model.bin", .. option]);
            var error = AssertBadInput(run, option[0] + " ");
            Assert.DoesNotContain("MaxNewTokens", error);
            Assert.DoesNotContain("Parameter", error);
        }
    }

    [Fact]
    public void Corrupt_checkpoint_files_name_the_file_and_field_without_dumping_them()
    {
        using var root = CliRunner.TempFolder("corrupt");
        var (model, data) = Setup(root);
        string output = Path.Combine(root, "out");
        var first = CliRunner.Run(TrainArgs(model, data, output, "--save-every", "2", "--steps", "2"));
        Assert.True(first.Code == 0, $"exit {first.Code}: {first.Stderr}");
        var before = Outputs(output);
        string checkpoint = Path.Combine(output, "checkpoint-2");

        // optimizer.bin: a 19 KB "kind" string of binary, then a format number.
        var optimizer = Path.Combine(checkpoint, "optimizer.bin");
        var original = File.ReadAllBytes(optimizer);
        var garbage = new byte[19_000];
        new Random(1).NextBytes(garbage);
        for (int i = 0; i < garbage.Length; i++) garbage[i] = (byte)(garbage[i] & 0x7F); // valid UTF-8, mostly control and odd characters
        using (var w = new BinaryWriter(File.Create(optimizer), Encoding.UTF8))
        {
            w.Write(Encoding.UTF8.GetString(garbage));
            w.Write(7);
        }
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, output, "--resume")), "optimizer.bin", "checkpoint-2");
        File.WriteAllBytes(optimizer, original);

        // trainer_state.json: a field that does not fit.
        var state = Path.Combine(checkpoint, "trainer_state.json");
        var json = File.ReadAllText(state);
        File.WriteAllText(state, System.Text.RegularExpressions.Regex.Replace(json, "\"losses\": \\[[^\\]]*\\]", "\"losses\": [1.5]"));
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, output, "--resume")), "trainer_state.json", "\"losses\"");
        AssertSameOutputs(before, output);
    }

    [Fact]
    public void A_failed_rerun_leaves_the_previous_outputs_byte_identical()
    {
        using var root = CliRunner.TempFolder("failed-rerun");
        var (model, data) = Setup(root);
        string output = Path.Combine(root, "out");
        var first = CliRunner.Run(TrainArgs(model, data, output));
        Assert.True(first.Code == 0, $"exit {first.Code}: {first.Stderr}");
        var before = Outputs(output);
        Assert.Contains("metrics.jsonl", before.Keys);
        Assert.Contains(Path.Combine("adapter", "adapter_model.safetensors"), before.Keys);
        Assert.Contains("loss.svg", before.Keys);

        // Diverges at step 2, after step 1's metrics line was written (to the staging folder).
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, output, "--steps", "6", "--lr", "1e30")), "at step ");
        AssertSameOutputs(before, output);

        // A successful rerun replaces all three.
        var rerun = CliRunner.Run(TrainArgs(model, data, output, "--steps", "3"));
        Assert.True(rerun.Code == 0, $"exit {rerun.Code}: {rerun.Stderr}");
        Assert.Equal([1, 2, 3], MetricSteps(output));
        Assert.False(before["loss.svg"].AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(output, "loss.svg"))));
    }

    [Fact]
    public void An_output_that_is_an_input_or_a_file_is_refused_before_loading()
    {
        using var root = CliRunner.TempFolder("output-input");
        var (model, data) = Setup(root);
        byte[] dataBefore = File.ReadAllBytes(data);
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, data)), "--output", "is a file");
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, model)), "--output", "--model");
        AssertBadInput(CliRunner.Run(TrainArgs(model, data, Path.Combine(model, "run"))), "--output", "--model");
        Assert.Equal(dataBefore, File.ReadAllBytes(data));
        Assert.False(Directory.Exists(Path.Combine(model, "adapter")));
    }

    [Fact]
    public void A_staging_folder_left_by_a_killed_run_is_removed_by_the_next_run()
    {
        using var root = CliRunner.TempFolder("stale-staging");
        var (model, data) = Setup(root);
        string output = Path.Combine(root, "out"), stale = Path.Combine(output, ".run-0123456789abcdef");
        Directory.CreateDirectory(Path.Combine(stale, "adapter"));
        File.WriteAllText(Path.Combine(stale, "metrics.jsonl"), "{\"step\":1}\n");
        var run = CliRunner.Run(TrainArgs(model, data, output));
        Assert.True(run.Code == 0, $"exit {run.Code}: {run.Stderr}");
        Assert.False(Directory.Exists(stale), "the killed run's staging folder is still there");
        Assert.Empty(Directory.GetDirectories(output, ".run-*"));
    }

    [Fact]
    public void A_cancelled_rerun_leaves_the_previous_outputs_and_its_checkpoints_resume()
    {
        using var root = CliRunner.TempFolder("cancelled-rerun");
        var (model, data) = Setup(root);
        string output = Path.Combine(root, "out");
        var first = CliRunner.Run(TrainArgs(model, data, output, "--save-every", "2"));
        Assert.True(first.Code == 0, $"exit {first.Code}: {first.Stderr}");
        var before = Outputs(output);

        // Resume to 8 steps, cancelled after step 6 (its checkpoint is written).
        var options = new FineTuneOptions
        {
            ModelPath = model, DataPath = data, OutputDir = output, BatchSize = 2, Resume = true,
            Dataset = new PeftGen.Data.JsonlDatasetOptions { MaxSequenceLength = 32 },
            LoRA = new PeftGen.Methods.LoRA.LoRAConfig { Rank = 4, Alpha = 16, Dropout = 0.05f, Targets = PeftGen.Methods.TargetModules.AllLinear },
            Trainer = new TrainerOptions { MaxSteps = 8, LearningRate = 1e-2f, CheckpointEvery = 2 },
        };
        using (var cts = new CancellationTokenSource())
        using (var session = FineTuneSession.Open(options))
        {
            Assert.ThrowsAny<OperationCanceledException>(() => session.Train(new Sync(p => { if (p.Step == 6) cts.Cancel(); }), cts.Token));
        }
        AssertSameOutputs(before, output);
        Assert.True(Directory.Exists(Path.Combine(output, "checkpoint-6")));

        // The CLI resumes from checkpoint-6; the log continues the cancelled run's (kept in the checkpoint).
        var resumed = CliRunner.Run(TrainArgs(model, data, output, "--resume", "--save-every", "2", "--steps", "8"));
        Assert.True(resumed.Code == 0, $"exit {resumed.Code}: {resumed.Stderr}");
        Assert.Contains("checkpoint-6", resumed.Stderr);
        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 8], MetricSteps(output));
    }

    private sealed class Sync(Action<TrainerProgress> report) : IProgress<TrainerProgress>
    {
        public void Report(TrainerProgress value) => report(value);
    }
}
