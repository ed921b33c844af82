using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.VeRA;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using PeftGen.Tests.Methods.LoRA;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Methods.VeRA;

public class VeraTests
{
    /// <summary>A 12 → 10 layer over projections wider than it (A [6, 20], B [18, 6]) with an adapter of rank 4.</summary>
    private static (VeraLinear Layer, VeraProjections Projections) Layer(bool bias = true, float dropout = 0f)
    {
        var projections = VeraProjections.Generate(6, 20, 18, seed: 3);
        var baseLayer = new Linear(12, 10, bias, new Random(1));
        baseLayer.Freeze();
        var layer = new VeraLinear(baseLayer, new Rng(7));
        layer.AddAdapter("default", 4, dropout, 0.1f, projections);
        return (layer, projections);
    }

    private static void Randomize(Tensor t, int seed, float scale = 0.5f)
    {
        var r = new Random(seed);
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = (float)(r.NextGaussian() * scale);
    }

    [Fact]
    public void Vera_output_matches_the_closed_form_on_sliced_projections()
    {
        var (layer, projections) = Layer();
        using var _ = layer;
        using var __ = projections;
        Randomize(layer.LambdaB("default"), 5);
        Randomize(layer.LambdaD("default"), 6);
        using var scope = TensorScope.Begin();
        var x = Tensor.RandN([2, 3, 12], new Random(4));
        using var noGrad = GradMode.Disable();
        var y = layer.Forward(x).ToArray();
        var baseOut = layer.BaseLayer.Forward(x).ToArray();
        var xs = x.ToArray();
        var a = projections.A.ToArray();                                                         // [6, 20]
        var bp = projections.B.ToArray();                                                        // [18, 6]
        var lb = layer.LambdaB("default").ToArray();
        var ld = layer.LambdaD("default").ToArray();
        double maxErr = 0;
        for (int row = 0; row < 6; row++)
            for (int o = 0; o < 10; o++)
            {
                double sum = 0;
                for (int k = 0; k < 4; k++)
                {
                    double ax = 0;
                    for (int i = 0; i < 12; i++) ax += (double)a[k * 20 + i] * xs[row * 12 + i];  // A[:4, :12]·x
                    sum += bp[o * 6 + k] * ld[k] * ax;                                             // B[:10, :4]·(d ∘ …)
                }
                double expected = baseOut[row * 10 + o] + lb[o] * sum;
                maxErr = Math.Max(maxErr, Math.Abs(expected - y[row * 10 + o]));
            }
        Assert.True(maxErr < 1e-5, $"VeRA output vs x·W0ᵀ + b ∘ B_s·(d ∘ A_s·x): max error {maxErr:E3}");
        using var delta = layer.Delta("default");
        var dw = delta.ToArray();
        double maxDelta = 0;
        for (int o = 0; o < 10; o++)
            for (int i = 0; i < 12; i++)
            {
                double expected = 0;
                for (int k = 0; k < 4; k++) expected += (double)lb[o] * bp[o * 6 + k] * ld[k] * a[k * 20 + i];
                maxDelta = Math.Max(maxDelta, Math.Abs(expected - dw[o * 12 + i]));
            }
        Assert.True(maxDelta < 1e-6, $"ΔW vs diag(b)·B_s·diag(d)·A_s: max error {maxDelta:E3}");
    }

    [Fact]
    public void Fresh_vera_adapter_is_a_no_op_and_merging_matches_the_unmerged_output()
    {
        var (layer, projections) = Layer(bias: false);
        using var _ = layer;
        using var __ = projections;
        using var x = Tensor.RandN([4, 12], new Random(3));
        using var noGrad = GradMode.Disable();
        Assert.Equal(layer.BaseLayer.Forward(x).ToArray(), layer.Forward(x).ToArray());
        Randomize(layer.LambdaB("default"), 8);
        var before = layer.BaseLayer.EffectiveWeight().ToArray();
        var unmerged = layer.Forward(x).ToArray();
        layer.Merge();
        float err = unmerged.Zip(layer.Forward(x).ToArray(), (p, q) => MathF.Abs(p - q)).Max();
        Assert.True(err < 1e-5f, $"merged vs unmerged: max error {err:E3}");
        layer.Unmerge();
        float werr = before.Zip(layer.BaseLayer.EffectiveWeight().ToArray(), (p, q) => MathF.Abs(p - q)).Max();
        Assert.True(werr < 1e-6f, $"unmerge must restore W0: max error {werr:E3}");
    }

    [Fact]
    public void Vera_gradients_match_finite_differences()
    {
        var (layer, projections) = Layer();
        using var _ = layer;
        using var __ = projections;
        Randomize(layer.LambdaB("default"), 5);
        Randomize(layer.LambdaD("default"), 6);
        var x = Tensor.RandN([2, 3, 12], new Random(4));
        x.RequiresGrad = true;
        GradCheck.Assert(t => layer.Forward(t[0]), [x, layer.LambdaB("default"), layer.LambdaD("default")], eps: 1e-3f);
        Assert.Null(projections.A.Grad);
        Assert.Null(((Linear)layer.BaseLayer).Weight.Grad);
    }

    [Fact]
    public void Vera_trains_out_plus_r_per_layer_over_projections_sized_to_the_widest_layer()
    {
        using var peft = VeraModel.Create(new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1), new VeraConfig { Rank = 16, Targets = TargetModules.AllLinear });
        long expected = peft.VeraLayers.Sum(l => (long)l.Layer.OutFeatures + 16);
        Assert.Equal(14, peft.VeraLayers.Count());
        Assert.Equal(expected, peft.Model.CountParameters().Trainable);
        Assert.Equal(expected, peft.Plan().Sum(p => p.TrainableParameters));
        Assert.All(peft.Model.NamedParameters().Where(p => p.Tensor.RequiresGrad), p => Assert.Matches(@"\.vera_lambda_(b|d)\.default\.weight$", p.Path));
        Assert.Equal([16, 48], peft.VeraProjections!.A.Shape.ToArray());                    // in_max = intermediate (down_proj)
        Assert.Equal([48, 16], peft.VeraProjections.B.Shape.ToArray());                     // out_max = intermediate (gate/up)
        Assert.All(peft.VeraLayers, l => Assert.Same(peft.VeraProjections, l.Layer.GetSettings("default").Projections));
    }

    [Fact]
    public void Vera_projections_are_reproducible_from_the_seed_and_kaiming_bounded()
    {
        using var p1 = VeraProjections.Generate(8, 40, 30, seed: 5);
        using var p2 = VeraProjections.Generate(8, 40, 30, seed: 5);
        using var p3 = VeraProjections.Generate(8, 40, 30, seed: 6);
        Assert.True(p1.SameValues(p2));
        Assert.False(p1.SameValues(p3));
        float boundA = MathF.Sqrt(6f / 40), boundB = MathF.Sqrt(6f / 8);
        Assert.All(p1.A.ToArray(), v => Assert.InRange(v, -boundA, boundA));
        Assert.All(p1.B.ToArray(), v => Assert.InRange(v, -boundB, boundB));
        Assert.True(p1.A.ToArray().Max(MathF.Abs) > 0.9f * boundA, "A should fill its Kaiming range");
    }

    [Fact]
    public void Vera_invalid_settings_and_combinations_are_errors()
    {
        using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
        var d0 = Assert.Throws<ArgumentException>(() => VeraModel.Create(model, new VeraConfig { Rank = 8, DInitial = 0 }));
        Assert.Contains("d_initial", d0.Message);
        using var peft = VeraModel.Create(model, new VeraConfig { Rank = 8, Targets = TargetModules.Parse("q_proj") });
        var rank = Assert.Throws<ArgumentException>(() => peft.AddAdapter("big", new VeraConfig { Rank = 16, Targets = TargetModules.Parse("q_proj") }));
        Assert.Contains("exceeds the rank 8 of the shared projections", rank.Message);
        var wide = Assert.Throws<ArgumentException>(() => peft.AddAdapter("wide", new VeraConfig { Rank = 8, Targets = TargetModules.Parse("gate_proj") }));
        Assert.Contains("gate_proj", wide.Message);
        Assert.Contains("cover at most [32, 32]", wide.Message);
        var seed = Assert.Throws<ArgumentException>(() => peft.AddAdapter("seed", new VeraConfig { Rank = 8, ProjectionSeed = 1, Targets = TargetModules.Parse("q_proj") }));
        Assert.Contains("projection seed", seed.Message);
        Assert.Equal(["default"], peft.Adapters);
    }

    [Fact]
    public void Vera_adapters_switch_disable_and_merge_and_unload()
    {
        using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
        var batch = LoRAFATests.FixedBatch();
        var baseline = LoRAFATests.Logits(model, batch);
        using var peft = VeraModel.Create(model, new VeraConfig { Rank = 8, Targets = TargetModules.AllLinear });
        peft.AddAdapter("other", new VeraConfig { Rank = 4, Targets = TargetModules.Parse("q_proj") });
        foreach (var (_, layer) in peft.VeraLayers)
        {
            Randomize(layer.LambdaB("default"), 1, 0.3f);
            if (layer.AdapterNames.Contains("other")) Randomize(layer.LambdaB("other"), 2, 0.3f);
        }
        var adapted = LoRAFATests.Logits(model, batch);
        Assert.True(adapted.Zip(baseline, (p, q) => MathF.Abs(p - q)).Max() > 1e-4f);
        using (peft.DisableAdapters()) Assert.Equal(baseline, LoRAFATests.Logits(model, batch));
        peft.SetAdapter("other");
        Assert.All(peft.Model.NamedParameters().Where(p => p.Tensor.RequiresGrad), p => Assert.Contains(".other.", p.Path));
        peft.SetAdapter("default");
        var merged = peft.MergeAndUnload();
        float err = adapted.Zip(LoRAFATests.Logits(merged, batch), (p, q) => MathF.Abs(p - q)).Max();
        Assert.True(err < 1e-4f, $"merged VeRA model logits differ by {err:E3}");
        Assert.DoesNotContain(merged.NamedModules(), m => m.Module is VeraLinear);
    }

    [Fact]
    public void Vera_saves_and_loads_in_peft_format()
    {
        var folder = Path.Combine(Path.GetTempPath(), "peftgen-vera-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
            var batch = LoRAFATests.FixedBatch();
            using var peft = VeraModel.Create(model, new VeraConfig { Rank = 8, Targets = TargetModules.Parse("q_proj,v_proj"), ProjectionSeed = 4 });
            foreach (var (_, layer) in peft.VeraLayers)
            {
                Randomize(layer.LambdaB("default"), 1, 0.3f);
                Randomize(layer.LambdaD("default"), 2, 0.3f);
            }
            var adapted = LoRAFATests.Logits(model, batch);
            VeraAdapterFile.Save(peft, folder);

            using (var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapterFile.WeightsFileName)))
            {
                Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.vera_lambda_b", file.TensorNames);
                Assert.Equal([8], file.GetInfo("base_model.model.model.layers.1.self_attn.v_proj.vera_lambda_d").Shape);
                Assert.Equal([16], file.GetInfo("base_model.model.model.layers.1.self_attn.v_proj.vera_lambda_b").Shape);
                Assert.Equal([8, 32], file.GetInfo("base_model.vera_A").Shape);
                Assert.Equal([32, 8], file.GetInfo("base_model.vera_B").Shape);
                Assert.Equal(10, file.TensorNames.Count);
                Assert.Equal("pt", file.Metadata["format"]);
            }
            using (var json = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, PeftAdapterFile.ConfigFileName))))
            {
                var root = json.RootElement;
                Assert.Equal("VERA", root.GetProperty("peft_type").GetString());
                Assert.Equal(8, root.GetProperty("r").GetInt32());
                Assert.Equal(4, root.GetProperty("projection_prng_key").GetInt32());
                Assert.True(root.GetProperty("save_projection").GetBoolean());
                Assert.Equal(0.1, root.GetProperty("d_initial").GetDouble(), 6);
                Assert.Equal(0.0, root.GetProperty("vera_dropout").GetDouble());
                Assert.Equal(["q_proj", "v_proj"], root.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()!).ToArray());
            }

            using var fresh = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
            using var loaded = VeraAdapterFile.LoadInto(fresh, folder);
            float err = adapted.Zip(LoRAFATests.Logits(fresh, batch), (p, q) => MathF.Abs(p - q)).Max();
            Assert.True(err < 1e-6f, $"reloaded VeRA adapter changes logits by {err:E3}");
            Assert.True(loaded.VeraProjections!.SameValues(peft.VeraProjections!));

            using var other = new LlamaForCausalLM(PeftModelTests.Tiny with { HiddenSize = 16, NumAttentionHeads = 2, NumKeyValueHeads = 1 }, seed: 1);
            var mismatch = Assert.Throws<InvalidDataException>(() => VeraAdapterFile.LoadInto(other, folder));
            Assert.Contains("vera_lambda_b", mismatch.Message);
            Assert.DoesNotContain(other.NamedModules(), m => m.Module is VeraLinear);
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void Vera_without_saved_projections_reloads_only_when_peftgen_can_regenerate_them()
    {
        var folder = Path.Combine(Path.GetTempPath(), "peftgen-vera-noproj-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
            var batch = LoRAFATests.FixedBatch();
            using var peft = VeraModel.Create(model, new VeraConfig { Rank = 8, Targets = TargetModules.Parse("q_proj"), SaveProjection = false, ProjectionSeed = 9 });
            foreach (var (_, layer) in peft.VeraLayers) Randomize(layer.LambdaB("default"), 1, 0.3f);
            var adapted = LoRAFATests.Logits(model, batch);
            VeraAdapterFile.Save(peft, folder);
            using (var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapterFile.WeightsFileName)))
                Assert.DoesNotContain("base_model.vera_A", file.TensorNames);
            using (var fresh = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1))
            using (VeraAdapterFile.LoadInto(fresh, folder))
            {
                float err = adapted.Zip(LoRAFATests.Logits(fresh, batch), (p, q) => MathF.Abs(p - q)).Max();
                Assert.True(err < 1e-6f, $"regenerated projections change logits by {err:E3}");
            }
            // The same file as Python PEFT writes it (no PeftGen marker): PyTorch's generator would be needed.
            var weights = Path.Combine(folder, PeftAdapterFile.WeightsFileName);
            var tensors = new List<(string, Tensor)>();
            using (var file = SafetensorsFile.Open(weights))
                foreach (var name in file.TensorNames) tensors.Add((name, file.ReadTensor(name, DType.Float32)));
            Safetensors.Save(weights, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            using var again = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
            var e = Assert.Throws<InvalidDataException>(() => VeraAdapterFile.LoadInto(again, folder));
            Assert.Contains("save_projection=True", e.Message);
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void Vera_lowers_the_loss_on_a_tiny_llama()
    {
        using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
        using var peft = VeraModel.Create(model, new VeraConfig { Rank = 32, Targets = TargetModules.AllLinear });
        var batch = LoRAFATests.FixedBatch();
        using var trainer = new Trainer(peft, BatchSource.FromFunction(_ => batch),
            new TrainerOptions { MaxSteps = 25, LearningRate = 2e-2f, Schedule = "constant", MaxGradNorm = 1f });
        var losses = trainer.Train().Losses;
        Assert.True(losses[^1] < 0.7f * losses[0], $"VeRA loss went from {losses[0]:F4} to {losses[^1]:F4}; expected a drop of more than 30%");
        Console.WriteLine($"{nameof(VeraTests)} loss {losses[0]:F4} -> {losses[^1]:F4}");
    }
}
