using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.Methods.LayerDrop;
using PeftGen.Methods.LoRA;
using PeftGen.Methods;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.Methods.Bottleneck;
using PeftGen.Tests.Training;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Methods.LayerDrop;

public class LayerDropTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly LlamaConfig Tiny = BottleneckAdapterTests.Tiny with { NumHiddenLayers = 3 };
    private static readonly int[] Ids = [1, 2, 3, 4, 5, 6, 7, 8];

    /// <summary>Logits of the model run by hand through the given layers only.</summary>
    private static float[] LogitsThrough(LlamaForCausalLM model, params int[] layers)
    {
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        var x = model.Model.EmbedTokens.Forward(Ids, 2, 4);                                 // [2, 4, hidden]
        foreach (int l in layers) x = model.Model.Layers[l].Forward(x);
        return Ops.Linear(model.Model.Norm.Forward(x), model.OutputWeight).ToArray();      // [2, 4, vocab]
    }

    private static float[] Logits(LlamaForCausalLM model)
    {
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        return model.Forward(Ids, 2, 4).ToArray();
    }

    [Theory]
    [InlineData(new float[] { 0f, 1f, 0f }, new[] { 0, 2 })]
    [InlineData(new float[] { 1f, 0f, 1f }, new[] { 1 })]
    [InlineData(new float[] { 1f, 1f, 1f }, new int[0])]
    public void Probability_one_equals_the_model_without_those_layers(float[] probabilities, int[] kept)
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        model.Model.LayerDrop = new LayerDropper(probabilities, new Rng(1));
        model.Train();
        var dropped = Logits(model);
        Assert.Equal(LogitsThrough(model, kept), dropped);
        Assert.Equal(Enumerable.Range(0, 3).Except(kept), model.Model.LayerDrop!.LastSkipped);
    }

    [Fact]
    public void Probability_zero_equals_the_full_model_and_eval_never_drops()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        var full = LogitsThrough(model, 0, 1, 2);
        LayerDropper.Apply(model, new LayerDropConfig { Probability = 0f });
        model.Train();
        Assert.Equal(full, Logits(model));
        model.Model.LayerDrop = new LayerDropper([1f, 1f, 1f], new Rng(1));
        model.Eval();
        Assert.Equal(full, Logits(model));
    }

    [Fact]
    public void Skipped_layers_get_no_gradient()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        model.Model.LayerDrop = new LayerDropper([0f, 1f, 0f], new Rng(1));
        using (TensorScope.Begin())
            model.Loss(Ids, [2, 3, 4, 5, 6, 7, 8, 9], 2, 4).Backward();
        foreach (var (path, p) in model.NamedParameters())
        {
            bool skipped = path.StartsWith("model.layers.1.", StringComparison.Ordinal);
            Assert.True(skipped == (p.Grad == null), $"{path}: gradient {(p.Grad == null ? "missing" : "present")}");
        }
    }

    [Fact]
    public void Schedules_give_the_formula_probabilities_and_draws_follow_them()
    {
        Assert.Equal([0.1f, 0.2f, 0.3f, 0.4f], new LayerDropConfig { Probability = 0.4f, Schedule = LayerDropSchedule.Linear }.ProbabilitiesFor(4));
        Assert.Equal([0.3f, 0f, 0.3f, 0f], new LayerDropConfig { Probability = 0.3f, Layers = [0, 2] }.ProbabilitiesFor(4));
        var drop = new LayerDropper(new LayerDropConfig { Probability = 0.4f, Schedule = LayerDropSchedule.Linear }.ProbabilitiesFor(4), new Rng(7));
        var skips = new int[4];
        const int Passes = 20000;
        for (int n = 0; n < Passes; n++)
            for (int l = 0; l < 4; l++)
                if (drop.ShouldSkip(l)) skips[l]++;
        var rates = skips.Select(s => (double)s / Passes).ToArray();
        double maxErr = rates.Select((r, l) => Math.Abs(r - 0.1 * (l + 1))).Max();
        output.WriteLine($"skip rates {string.Join(", ", rates.Select(r => r.ToString("F4")))}");
        Assert.True(maxErr < 0.015, $"skip rates {string.Join(", ", rates)} vs p·(l+1)/L: max error {maxErr:F4}");
        // The same seed draws the same decisions.
        var a = new LayerDropper([0.5f, 0.5f], new Rng(3));
        var b = new LayerDropper([0.5f, 0.5f], new Rng(3));
        Assert.Equal(Enumerable.Range(0, 64).Select(i => a.ShouldSkip(i % 2)), Enumerable.Range(0, 64).Select(i => b.ShouldSkip(i % 2)));
    }

    [Theory]
    [InlineData(1f)]
    [InlineData(-0.1f)]
    [InlineData(float.NaN)]
    public void Probabilities_outside_zero_to_one_are_clear_errors(float p)
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        var e = Assert.Throws<ArgumentException>(() => LayerDropper.Apply(model, new LayerDropConfig { Probability = p }));
        Assert.Contains("Layer drop probability must be in [0, 1)", e.Message);
        Assert.Null(model.Model.LayerDrop);
        e = Assert.Throws<ArgumentException>(() => LayerDropper.Apply(model, new LayerDropConfig { Probability = 0.1f, Layers = [3] }));
        Assert.Contains("names layer 3; the model has 3 decoder layers", e.Message);
        e = Assert.Throws<ArgumentException>(() => new LayerDropper([0f, 1.5f], new Rng(1)));
        Assert.Contains("layer 1 must be in [0, 1]", e.Message);
    }

    [Fact]
    public void LoRA_training_with_layer_drop_lowers_the_loss_and_resumes_exactly()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"peftgen-layerdrop-{Guid.NewGuid():N}");
        try
        {
            var options = new TrainerOptions { MaxSteps = 24, LearningRate = 3e-2f, MaxGradNorm = 1f, CheckpointEvery = 12, KeepCheckpoints = 3, OutputDir = dir };
            (PeftModel<LlamaForCausalLM>, LayerDropper, Trainer) Build(TrainerOptions o)
            {
                var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 3),
                    new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear, Seed = 5 });
                var drop = LayerDropper.Apply(peft.Model, new LayerDropConfig { Probability = 0.3f, Schedule = LayerDropSchedule.Linear, Seed = 4 });
                // The adapted model reports both generators, dropout's then the layer drop's, for the checkpoints.
                var trainer = new Trainer(peft, BatchSource.FromFunction(p => TrainerTests.DigitBatch(p, steps: [1])), o);
                Assert.Equal(new[] { peft.DropoutRng, drop.Rng }, peft.RandomGenerators, ReferenceEqualityComparer.Instance);
                return (peft, drop, trainer);
            }
            var (peftA, _, trainerA) = Build(options);
            var full = trainerA.Train().Losses;
            trainerA.Dispose();
            peftA.Dispose();
            float first = full.Take(3).Average(), last = full.TakeLast(3).Average();
            output.WriteLine($"loss {first:F4} → {last:F4}");
            Assert.True(last < first - 0.3f, $"training with layer drop should lower the loss: first 3 steps {first:F4}, last 3 {last:F4}");

            var (peftB, _, trainerB) = Build(options with { OutputDir = dir + "-b" });
            trainerB.LoadCheckpoint(Path.Combine(dir, "checkpoint-12"));
            var resumed = trainerB.Train().Losses;
            trainerB.Dispose();
            peftB.Dispose();
            Assert.Equal(full, resumed); // the layer-drop generator's state is in the checkpoint
        }
        finally
        {
            foreach (var d in (string[])[dir, dir + "-b"])
                if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        }
    }
}
