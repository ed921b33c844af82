using PeftGen.Data;
using PeftGen.Models.Llama;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Training;

public class TrainingTests
{
    /// <summary>
    /// Digits counting up by a per-sequence step modulo 10. After the first two digits every next digit is
    /// determined, so a model that infers the step reaches ~0 loss; chance is ln 10 ≈ 2.30, and a model that
    /// only learned digit frequencies stays near 2.30. A final loss under 0.25 means it learned the rule.
    /// </summary>
    private static Batch DigitBatch(Random random, int batch, int length)
    {
        var inputs = new int[batch * length];
        var targets = new int[batch * length];
        for (int b = 0; b < batch; b++)
        {
            int start = random.Next(10), step = random.Next(1, 10);
            for (int t = 0; t < length; t++)
            {
                inputs[b * length + t] = (start + t * step) % 10;
                targets[b * length + t] = t == 0 ? -100 : (start + (t + 1) * step) % 10;
            }
        }
        return new Batch(inputs, targets, batch, length);
    }

    [Fact]
    public void Tiny_llama_learns_a_synthetic_sequence_task()
    {
        var config = new LlamaConfig
        {
            HiddenSize = 48, IntermediateSize = 128, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            VocabSize = 10, MaxPositionEmbeddings = 16, RmsNormEps = 1e-5f, TieWordEmbeddings = true,
        };
        using var model = new LlamaForCausalLM(config, seed: 1);
        var random = new Random(2);
        var options = new TrainerOptions { MaxSteps = 250, LearningRate = 3e-3f, WarmupSteps = 10, Schedule = "cosine", MaxGradNorm = 1f };
        using var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), BatchSource.FromFunction(_ => DigitBatch(random, 16, 16)), options);
        var losses = trainer.Train().Losses;
        float final = losses.TakeLast(10).Average();
        Assert.True(losses[0] > 2.0f, $"initial loss {losses[0]:F3} should be near chance (2.30)");
        Assert.True(final < 0.25f, $"mean loss of the last 10 steps is {final:F3} (first {losses[0]:F3}); expected < 0.25");
    }

    [Fact]
    public void Nan_loss_stops_with_the_step_number()
    {
        var config = new LlamaConfig
        {
            HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1, NumAttentionHeads = 2, VocabSize = 10, MaxPositionEmbeddings = 8,
        };
        using var model = new LlamaForCausalLM(config, seed: 1);
        model.Model.Norm.Weight.AsSpan()[0] = float.NaN;
        var random = new Random(2);
        var e = Assert.Throws<InvalidOperationException>(() =>
            new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), BatchSource.FromFunction(_ => DigitBatch(random, 2, 8)),
                new TrainerOptions { MaxSteps = 3 }).Train());
        Assert.Contains("step 1", e.Message);
    }
}
