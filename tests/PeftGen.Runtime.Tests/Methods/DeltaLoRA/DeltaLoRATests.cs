using PeftGen.Data;
using PeftGen.Methods.DeltaLoRA;
using PeftGen.Methods.LoRA;
using PeftGen.Methods;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Optim;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using PeftGen.Tests.Methods.LoRA;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Methods.DeltaLoRA;

public class DeltaLoRATests
{
    private static readonly DeltaLoRAOptions Options = new() { StartStep = 2, UpdateRatio = 2f };

    private static LoRAConfig Config(int rank = 2) =>
        new() { Rank = rank, Alpha = 4, Targets = TargetModules.Parse("q_proj,v_proj"), DeltaLoRA = Options, Seed = 3 };

    private static void Randomize(Tensor t, int seed, float scale = 0.2f)
    {
        var r = new Random(seed);
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = (float)(r.NextGaussian() * scale);
    }

    private static double[] Product(float[] b, float[] a, int outF, int r, int inF)
    {
        var p = new double[outF * inF];
        for (int o = 0; o < outF; o++)
            for (int k = 0; k < r; k++)
                for (int i = 0; i < inF; i++) p[o * inF + i] += (double)b[o * r + k] * a[k * inF + i];
        return p;
    }

    [Fact]
    public void DeltaLoRA_moves_the_base_by_the_change_of_sBA_after_the_start_step()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1), Config());
        using var updater = DeltaLoRAUpdater.Create(peft);
        var (_, layer) = peft.LoRALayers.First();
        var w = ((Linear)layer.BaseLayer).Weight;
        var a = layer.LoraA("default");
        var b = layer.LoraB("default");
        float s = layer.GetSettings("default").Scaling;                                         // 4 / 2 = 2
        var w0 = w.ToArray();
        double maxErr = 0;
        for (int step = 1; step <= 4; step++)
        {
            var aBefore = a.ToArray();
            var bBefore = b.ToArray();
            var wBefore = w.ToArray();
            Randomize(b, 10 + step);                                                             // what an optimizer step would do
            Randomize(a, 20 + step);
            updater.AfterStep(step);
            var after = Product(b.ToArray(), a.ToArray(), 32, 2, 32);
            var before = Product(bBefore, aBefore, 32, 2, 32);
            var wNow = w.ToArray();
            for (int i = 0; i < wNow.Length; i++)
            {
                double expected = step > Options.StartStep ? wBefore[i] + 2.0 * s * (after[i] - before[i]) : wBefore[i];
                maxErr = Math.Max(maxErr, Math.Abs(expected - wNow[i]));
            }
        }
        Assert.True(maxErr < 1e-5, $"W after each step vs W + λ·s·(B'A' − BA) (unchanged up to step K): max error {maxErr:E3}");
        Assert.Equal(2, updater.UpdatesApplied);

        // The updates telescope: W − W0 equals the saved factored ΔW.
        var (path, deltaA, deltaB, rank) = updater.BaseDelta()[0];
        Assert.Equal("model.layers.0.self_attn.q_proj", path);
        var delta = Product(deltaB, deltaA, 32, rank, 32);
        var wEnd = w.ToArray();
        double telescope = Enumerable.Range(0, wEnd.Length).Max(i => Math.Abs(wEnd[i] - w0[i] - delta[i]));
        Assert.True(telescope < 1e-5, $"W − W0 vs DeltaB·DeltaA: max error {telescope:E3}");
    }

    [Fact]
    public void DeltaLoRA_gradients_match_finite_differences_and_the_base_gets_none()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1), Config());
        var (_, layer) = peft.LoRALayers.First();
        Randomize(layer.LoraB("default"), 5, 0.5f);
        var x = Tensor.RandN([2, 3, 32], new Random(4));
        x.RequiresGrad = true;
        GradCheck.Assert(t => layer.Forward(t[0]), [x, layer.LoraA("default"), layer.LoraB("default")], eps: 1e-3f);
        var w = ((Linear)layer.BaseLayer).Weight;
        Assert.False(w.RequiresGrad);
        Assert.Null(w.Grad);
        Assert.DoesNotContain(w, peft.TrainableParameters());
    }

    [Fact]
    public void DeltaLoRA_trains_as_many_parameters_as_LoRA()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1), Config(rank: 4) with { Targets = TargetModules.AllLinear });
        long expected = peft.LoRALayers.Sum(l => 4L * (l.Layer.InFeatures + l.Layer.OutFeatures));
        Assert.Equal(expected, peft.Model.CountParameters().Trainable);
        Assert.Equal(expected, peft.Plan().Sum(p => p.TrainableParameters));
    }

    [Fact]
    public void DeltaLoRA_invalid_combinations_are_errors()
    {
        using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
        var quantized = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, Config(), new QuantizationConfig(QuantType.NF4, BlockSize: 32)));
        Assert.Contains("stored 4-bit", quantized.Message);
        Assert.Contains("q_proj", quantized.Message);
        Assert.All(model.NamedModules().Where(m => m.Path.EndsWith("q_proj")), m => Assert.IsType<Linear>(m.Module)); // nothing was wrapped
        var dropout = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, Config() with { Dropout = 0.1f }));
        Assert.Contains("Dropout = 0", dropout.Message);
        var dora = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, Config() with { UseDoRA = true }));
        Assert.Contains("DoRA", dora.Message);
        var fa = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, Config() with { UseLoRAFA = true }));
        Assert.Contains("LoRA-FA", fa.Message);
        var ratio = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, Config() with { DeltaLoRA = new DeltaLoRAOptions { UpdateRatio = 0 } }));
        Assert.Contains("UpdateRatio", ratio.Message);
        using var plain = PeftModel.Create(model, new LoRAConfig());
        var notDelta = Assert.Throws<ArgumentException>(() => DeltaLoRAUpdater.Create(plain));
        Assert.Contains("plain LoRA", notDelta.Message);
    }

    [Fact]
    public void Trainer_calls_after_step_hooks_with_the_step_number()
    {
        using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
        using var peft = PeftModel.Create(model, Config());
        using var updater = DeltaLoRAUpdater.Create(peft);
        var batch = LoRAFATests.FixedBatch();
        var steps = new List<int>();
        using var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), BatchSource.FromFunction(_ => batch),
            new TrainerOptions { MaxSteps = 5, LearningRate = 1e-2f, Schedule = "constant" });
        trainer.AfterStepHooks.Add(updater);
        trainer.AfterStepHooks.Add(new RecordingHook(steps));
        var w0 = ((Linear)peft.LoRALayers.First().Layer.BaseLayer).Weight.ToArray();
        trainer.Train();
        Assert.Equal([1, 2, 3, 4, 5], steps);
        Assert.Equal(5 - Options.StartStep, updater.UpdatesApplied);
        var w = ((Linear)peft.LoRALayers.First().Layer.BaseLayer).Weight.ToArray();
        Assert.True(w.Zip(w0, (p, q) => MathF.Abs(p - q)).Max() > 0, "the trainer's hook should have moved the base");
    }

    private sealed class RecordingHook(List<int> steps) : IAfterStepHook
    {
        public void AfterStep(int step) => steps.Add(step);
    }

    [Fact]
    public void DeltaLoRA_lowers_the_loss_moves_the_base_and_reloads_from_its_files()
    {
        using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
        using var peft = PeftModel.Create(model, Config(rank: 4) with { Targets = TargetModules.AllLinear });
        var batch = LoRAFATests.FixedBatch();
        var w0 = ((Linear)peft.LoRALayers.First().Layer.BaseLayer).Weight.ToArray();
        // The trainer of the adapted model runs the updater the model creates for its Delta-LoRA adapter.
        using var trainer = new Trainer(peft, BatchSource.FromFunction(_ => batch),
            new TrainerOptions { MaxSteps = 25, LearningRate = 1e-2f, Schedule = "constant", MaxGradNorm = 1f });
        var updater = Assert.IsType<DeltaLoRAUpdater>(Assert.Single(trainer.AfterStepHooks));
        var losses = trainer.Train().Losses;
        Assert.True(losses[^1] < 0.7f * losses[0], $"Delta-LoRA loss went from {losses[0]:F4} to {losses[^1]:F4}; expected a drop of more than 30%");
        Console.WriteLine($"{nameof(DeltaLoRATests)} loss {losses[0]:F4} -> {losses[^1]:F4}");
        Assert.Equal(25 - Options.StartStep, updater.UpdatesApplied);
        var w = ((Linear)peft.LoRALayers.First().Layer.BaseLayer).Weight.ToArray();
        Assert.True(w.Zip(w0, (p, q) => MathF.Abs(p - q)).Max() > 1e-4f, "the base should have moved");

        var trained = LoRAFATests.Logits(model, batch);
        var folder = Path.Combine(Path.GetTempPath(), "peftgen-delta-" + Guid.NewGuid().ToString("N"));
        try
        {
            peft.SaveAdapter(folder);                                                           // DeltaLoRAFile with the trainer's updater
            Assert.True(File.Exists(Path.Combine(folder, DeltaLoRAFile.BaseDeltaFileName)));
            Assert.True(File.Exists(Path.Combine(folder, PeftAdapterFile.ConfigFileName)));
            using var fresh = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
            using var loaded = DeltaLoRAFile.LoadInto(fresh, folder);
            float err = trained.Zip(LoRAFATests.Logits(fresh, batch), (p, q) => MathF.Abs(p - q)).Max();
            Assert.True(err < 1e-4f, $"reloaded Delta-LoRA model (W0 + ΔW + s·B·A) changes logits by {err:E3}");
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}
