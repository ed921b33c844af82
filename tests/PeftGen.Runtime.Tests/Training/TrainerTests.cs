using PeftGen.Data;
using PeftGen.Methods.LoRA;
using PeftGen.Methods;
using PeftGen.Models.Llama;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Training;

public class TrainerTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = 10, MaxPositionEmbeddings = 16, TieWordEmbeddings = true,
    };

    /// <summary>Digits counting by a per-sequence step mod 10; batch p is a pure function of p.</summary>
    internal static Batch DigitBatch(long position, int batch = 8, int length = 12, int seedOffset = 0, int[]? steps = null)
    {
        var random = new Random(unchecked((int)position * 7919 + seedOffset));
        var inputs = new int[batch * length];
        var targets = new int[batch * length];
        for (int b = 0; b < batch; b++)
        {
            int start = random.Next(10), step = steps == null ? random.Next(1, 10) : steps[random.Next(steps.Length)];
            for (int t = 0; t < length; t++)
            {
                inputs[b * length + t] = (start + t * step) % 10;
                targets[b * length + t] = t == 0 ? -100 : (start + (t + 1) * step) % 10;
            }
        }
        return new Batch(inputs, targets, batch, length);
    }

    private static (PeftModel<LlamaForCausalLM> Peft, Trainer Trainer) Build(TrainerOptions options, QuantizationConfig? quant = null, float dropout = 0.1f, IBatchSource? eval = null)
    {
        var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 3),
            new LoRAConfig { Rank = 4, Alpha = 8, Dropout = dropout, Targets = TargetModules.AllLinear, Seed = 5 }, quant);
        var trainer = new Trainer(peft, BatchSource.FromFunction(p => DigitBatch(p)), options, eval);   // checkpoints peft.DropoutRng
        return (peft, trainer);
    }

    private static string TempDir() => Path.Combine(Path.GetTempPath(), $"peftgen-trainer-{Guid.NewGuid():N}");

    [Fact]
    public void Resuming_from_a_checkpoint_reproduces_the_uninterrupted_losses_exactly()
    {
        var dir = TempDir();
        try
        {
            var options = new TrainerOptions
            {
                MaxSteps = 8, LearningRate = 1e-2f, Schedule = "cosine", WarmupSteps = 2, GradientAccumulationSteps = 2,
                CheckpointEvery = 4, KeepCheckpoints = 5, OutputDir = dir, MaxGradNorm = 1f,
            };
            var (peftA, trainerA) = Build(options);
            var full = trainerA.Train().Losses;
            trainerA.Dispose();
            peftA.Dispose();

            var (peftB, trainerB) = Build(options with { OutputDir = TempDir() });
            trainerB.LoadCheckpoint(Path.Combine(dir, "checkpoint-4"));
            Assert.Equal(4, trainerB.Step);
            var resumed = trainerB.Train().Losses;
            trainerB.Dispose();
            peftB.Dispose();
            Assert.Equal(full, resumed); // bit-exact: weights, optimizer, schedule, dropout RNG and data position restored
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_crash_mid_checkpoint_leaves_the_previous_checkpoint_usable()
    {
        var dir = TempDir();
        try
        {
            var options = new TrainerOptions { MaxSteps = 6, LearningRate = 1e-2f, CheckpointEvery = 3, OutputDir = dir };
            var (peft, trainer) = Build(options);
            int writes = 0;
            trainer.BeforeCheckpointFileWrite = path =>
            {
                // Let checkpoint-3 through (3 files), then "kill" the process while checkpoint-6 writes its second file.
                if (++writes == 5) throw new IOException("simulated crash");
            };
            Assert.Throws<IOException>(() => trainer.Train());
            Assert.Equal(Path.Combine(dir, "checkpoint-3"), Trainer.LatestCheckpoint(dir));
            Assert.False(Directory.Exists(Path.Combine(dir, "checkpoint-6")));
            Assert.Empty(Directory.GetDirectories(dir, ".*partial*"));
            trainer.Dispose();
            peft.Dispose();

            var (peft2, resumed) = Build(options);
            resumed.LoadCheckpoint(Trainer.LatestCheckpoint(dir)!);
            var losses = resumed.Train().Losses;
            Assert.Equal(6, losses.Count);
            Assert.All(losses, l => Assert.True(float.IsFinite(l)));
            resumed.Dispose();
            peft2.Dispose();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Truncated_checkpoint_files_are_clear_errors()
    {
        var dir = TempDir();
        try
        {
            var options = new TrainerOptions { MaxSteps = 2, LearningRate = 1e-2f, CheckpointEvery = 2, OutputDir = dir };
            var (peft, trainer) = Build(options);
            trainer.Train();
            var checkpoint = Trainer.LatestCheckpoint(dir)!;
            var weights = Path.Combine(checkpoint, "trainable.bin");
            var bytes = File.ReadAllBytes(weights);
            File.WriteAllBytes(weights, bytes[..(bytes.Length / 2)]);
            var e = Assert.Throws<InvalidDataException>(() => trainer.LoadCheckpoint(checkpoint));
            Assert.Contains("trainable.bin", e.Message);
            File.Delete(Path.Combine(checkpoint, "optimizer.bin"));
            e = Assert.Throws<InvalidDataException>(() => trainer.LoadCheckpoint(checkpoint));
            Assert.Contains("optimizer.bin is missing", e.Message);
            trainer.Dispose();
            peft.Dispose();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Non_finite_loss_stops_or_skips_as_asked()
    {
        var (peft, trainer) = Build(new TrainerOptions { MaxSteps = 3 });
        peft.Model.Model.Norm.Weight.AsSpan()[0] = float.NaN;
        var e = Assert.Throws<InvalidOperationException>(() => trainer.Train());
        Assert.Contains("step 1", e.Message);
        trainer.Dispose();
        peft.Dispose();

        var (peft2, skipping) = Build(new TrainerOptions { MaxSteps = 3, OnNonFinite = NonFinitePolicy.SkipStep });
        peft2.Model.Model.Norm.Weight.AsSpan()[0] = float.NaN;
        var result = skipping.Train();
        Assert.Equal(3, result.SkippedSteps);
        Assert.All(result.Losses, l => Assert.True(float.IsNaN(l)));
        skipping.Dispose();
        peft2.Dispose();
    }

    [Fact]
    public void LoRA_plus_puts_B_matrices_in_a_faster_group()
    {
        var (peft, trainer) = Build(new TrainerOptions { MaxSteps = 1, LoRAPlusRatio = 16 });
        var groups = trainer.Optimizer.Groups;
        Assert.Equal(2, groups.Count);
        Assert.Equal(16f, groups[1].LearningRateScale);
        var loraB = peft.Model.NamedParameters().Where(p => p.Path.Contains(".lora_B.")).Select(p => p.Tensor).ToList();
        Assert.Equal(peft.LoRALayers.Count(), loraB.Count);
        Assert.Equal(loraB, groups[1].Parameters, ReferenceEqualityComparer.Instance);
        trainer.Dispose();
        peft.Dispose();
    }

    [Fact]
    public void Evaluation_and_metrics_are_reported()
    {
        var dir = TempDir();
        try
        {
            var options = new TrainerOptions { MaxSteps = 4, EvalEvery = 2, EvalBatches = 2, LearningRate = 1e-2f, OutputDir = dir };
            var (peft, trainer) = Build(options, eval: BatchSource.FromFunction(p => DigitBatch(p, seedOffset: 99)));
            var reports = new List<TrainerProgress>();
            var result = trainer.Train(new SyncProgress(reports.Add));
            Assert.Equal([2, 4], result.EvalLosses.Select(e => e.Step).ToArray());
            Assert.Equal(4, reports.Count);
            Assert.NotNull(reports[1].EvalLoss);
            Assert.Equal(4, File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Length);
            trainer.Dispose();
            peft.Dispose();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void QLoRA_reaches_a_loss_within_5_percent_of_16_bit_LoRA()
    {
        // A base pretrained to count up (+1..+3) is adapted to count down (−1..−3): the realistic PEFT setting.
        using var pretrained = new LlamaForCausalLM(Tiny, seed: 3);
        using (var pretraining = new Trainer(pretrained, b => pretrained.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length),
            BatchSource.FromFunction(p => DigitBatch(p, steps: [1, 2, 3])), new TrainerOptions { MaxSteps = 150, LearningRate = 3e-3f, Schedule = "cosine", MaxGradNorm = 1f }))
            pretraining.Train();
        var weights = pretrained.StateDict();
        var options = new TrainerOptions { MaxSteps = 120, LearningRate = 1e-2f, Schedule = "cosine", WarmupSteps = 10, MaxGradNorm = 1f };
        float Final(QuantizationConfig? quant)
        {
            var model = new LlamaForCausalLM(Tiny);
            model.LoadStateDict(weights);
            using var peft = PeftModel.Create(model, new LoRAConfig { Rank = 8, Alpha = 16, Targets = TargetModules.AllLinear, Seed = 5 }, quant);
            using var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length),
                BatchSource.FromFunction(p => DigitBatch(p, steps: [7, 8, 9], seedOffset: 1)), options);
            return trainer.Train().Losses.TakeLast(20).Average();
        }
        float lora = Final(null);
        float qlora = Final(new QuantizationConfig(QuantType.NF4, DoubleQuant: true, BlockSize: 32));
        output.WriteLine($"final loss (mean of last 20 steps): LoRA {lora:F4}, QLoRA {qlora:F4} ({100 * (qlora - lora) / lora:+0.0;-0.0}%)");
        Assert.True(lora < 0.5f, $"16-bit LoRA should learn to count down (final loss {lora:F4}; chance 2.30)");
        Assert.True(MathF.Abs(qlora - lora) <= 0.05f * lora, $"QLoRA final loss {qlora:F4} vs LoRA {lora:F4} ({100 * (qlora - lora) / lora:F1}%)");
    }

    private sealed class SyncProgress(Action<TrainerProgress> report) : IProgress<TrainerProgress>
    {
        public void Report(TrainerProgress value) => report(value);
    }
}
