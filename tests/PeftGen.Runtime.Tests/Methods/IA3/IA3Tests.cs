using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.IA3;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using Xunit;
using static PeftGen.Tests.Methods.PromptLearning.PromptTuningSupport;

namespace PeftGen.Tests.Methods.IA3;

public class IA3Tests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static void RandomizeVectors(IA3Model<LlamaForCausalLM> ia3, int seed)
    {
        var random = new Random(seed);
        foreach (var (_, layer) in ia3.IA3Layers)
            foreach (var name in layer.AdapterNames)
            {
                var v = layer.Vector(name).AsSpan();
                for (int i = 0; i < v.Length; i++) v[i] = 1f + (float)(random.NextGaussian() * 0.3);
            }
    }

    [Fact]
    public void Output_and_input_scaling_match_the_closed_form()
    {
        var random = new Random(1);
        using var baseLayer = new Linear(6, 5, hasBias: true, random: random);
        using var x = Tensor.RandN([3, 6], random);
        var w = baseLayer.Weight.ToArray();
        var b = baseLayer.Bias!.ToArray();
        var xs = x.ToArray();
        foreach (bool feedForward in new[] { false, true })
        {
            using var layer = new IA3Linear(new Linear(6, 5, hasBias: true), feedForward);
            ((Linear)layer.BaseLayer).Weight.CopyFrom(baseLayer.Weight);
            layer.BaseLayer.Bias!.CopyFrom(baseLayer.Bias);
            layer.AddAdapter("default");
            Fill(layer.Vector("default"), random, 1f);
            var l = layer.Vector("default").ToArray();
            float[] actual;
            using (GradMode.Disable())
            using (TensorScope.Begin()) actual = layer.Forward(x).ToArray();
            double maxErr = 0;
            for (int r = 0; r < 3; r++)
                for (int o = 0; o < 5; o++)
                {
                    double y = b[o];
                    for (int i = 0; i < 6; i++) y += w[o * 6 + i] * xs[r * 6 + i] * (feedForward ? l[i] : 1f);
                    if (!feedForward) y *= l[o];                                   // the bias is scaled too, as in PEFT
                    maxErr = Math.Max(maxErr, Math.Abs(y - actual[r * 5 + o]));
                }
            Assert.True(maxErr < 1e-5, $"feedForward={feedForward}: max |IA3 − closed form| = {maxErr:E3}");
        }
    }

    [Fact]
    public void Vectors_start_at_one_so_the_model_is_unchanged()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 2);
        var before = Logits(model, Ids, 2, 4);
        using var ia3 = IA3Model.Create(model, new IA3Config());
        float diff = MaxDiff(before, Logits(model, Ids, 2, 4));
        Assert.True(diff == 0f, $"IA3 at init changed the logits by {diff:E3}");
        Assert.IsType<IA3Linear>(model.Model.Layers[0].Mlp.DownProj);
        Assert.True(((IA3Linear)model.Model.Layers[0].Mlp.DownProj).IsFeedForward);
        Assert.False(((IA3Linear)model.Model.Layers[1].SelfAttn.KProj).IsFeedForward);
    }

    [Fact]
    public void Trainable_parameters_are_the_sum_of_channel_counts()
    {
        using var ia3 = IA3Model.Create(new LlamaForCausalLM(Tiny, seed: 2), new IA3Config());
        int kvDim = Tiny.KeyValueHeads * Tiny.HeadDim;
        long expected = Tiny.NumHiddenLayers * (kvDim + kvDim + Tiny.IntermediateSize); // k_proj, v_proj out; down_proj in
        Assert.Equal(expected, ia3.TrainableParameters().Sum(t => t.Count));
        Assert.Equal(expected, ia3.Plan().Sum(p => p.TrainableParameters));
        Assert.Equal(6, ia3.Plan().Count);
        Assert.Contains($"trainable params: {expected:N0}", ia3.TrainableParametersSummary(), StringComparison.Ordinal);
    }

    [Fact]
    public void Gradients_of_both_kinds_of_vector_match_finite_differences()
    {
        var random = new Random(4);
        foreach (bool feedForward in new[] { false, true })
        {
            using var layer = new IA3Linear(new Linear(5, 4, hasBias: true, random: random), feedForward);
            layer.AddAdapter("default");
            Fill(layer.Vector("default"), random, 1f);
            var x = GradCheck.Param(random, 1f, 3, 5);
            GradCheck.Assert(inputs => layer.Forward(inputs[0]), [x, layer.Vector("default")]);
        }
    }

    [Fact]
    public void Merge_unmerge_and_merge_and_unload_keep_the_logits()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 5);
        var ia3 = IA3Model.Create(model, new IA3Config());
        RandomizeVectors(ia3, 6);
        var adapted = Logits(model, Ids, 2, 4);
        var originalWeight = ((Linear)((IA3Linear)model.Model.Layers[0].Mlp.DownProj).BaseLayer).Weight.ToArray();
        ia3.Merge();
        float merged = MaxDiff(adapted, Logits(model, Ids, 2, 4));
        Assert.True(merged < 1e-5f, $"merged logits differ by {merged:E3}");
        ia3.Unmerge();
        Assert.Equal(originalWeight, ((Linear)((IA3Linear)model.Model.Layers[0].Mlp.DownProj).BaseLayer).Weight.ToArray());
        using (ia3.DisableAdapters())
        {
            using var plain = new LlamaForCausalLM(Tiny, seed: 5);
            Assert.Equal(Logits(plain, Ids, 2, 4), Logits(model, Ids, 2, 4));
        }
        var unloaded = ia3.MergeAndUnload();
        Assert.IsType<Linear>(unloaded.Model.Layers[1].SelfAttn.VProj);
        float diff = MaxDiff(adapted, Logits(unloaded, Ids, 2, 4));
        Assert.True(diff < 1e-5f, $"merge-and-unload logits differ by {diff:E3}");
    }

    [Fact]
    public void Invalid_configurations_are_clear_errors()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 2);
        var e = Assert.Throws<ArgumentException>(() => IA3Model.Create(model, new IA3Config { Targets = TargetModules.List("k_proj", "v_proj") }));
        Assert.Contains("feedforward module 'down_proj' is not in the target list", e.Message);
        e = Assert.Throws<ArgumentException>(() => IA3Model.Create(model, new IA3Config { Targets = TargetModules.List("k_prj"), FeedForward = null }));
        Assert.Contains("Did you mean 'k_proj'?", e.Message);
        e = Assert.Throws<ArgumentException>(() => IA3Model.Create(model, new IA3Config { Targets = TargetModules.Regex(@".*\.k_proj"), FeedForward = TargetModules.List("down_proj") }));
        Assert.Contains("match none of the targeted layers", e.Message);
        Assert.All(model.NamedParameters(), p => Assert.True(p.Tensor.RequiresGrad, $"{p.Path} was frozen by a failed Create"));
    }

    [Fact]
    public void Training_lowers_the_loss()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 7);
        using var ia3 = IA3Model.Create(model, new IA3Config());
        var (first, last) = Train(model, ia3.TrainableParameters(), steps: 25, learningRate: 0.05f);
        output.WriteLine(FormattableString.Invariant($"IA3: loss {first:F4} -> {last:F4}"));
        Assert.True(last < 0.9f * first, $"IA3 training: loss {first:F4} → {last:F4}");
    }

    [Fact]
    public void Saves_and_loads_in_peft_format()
    {
        string folder = Path.Combine(Path.GetTempPath(), "peftgen-ia3-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = new LlamaForCausalLM(Tiny, seed: 8);
            var ia3 = IA3Model.Create(model, new IA3Config());
            RandomizeVectors(ia3, 9);
            var expected = Logits(model, Ids, 2, 4);
            IA3AdapterFile.Save(ia3, folder);

            using (var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapterFile.WeightsFileName)))
            {
                Assert.Equal(6, file.TensorNames.Count);
                Assert.Equal([16, 1], file.GetInfo("base_model.model.model.layers.0.self_attn.k_proj.ia3_l").Shape);
                Assert.Equal([1, 48], file.GetInfo("base_model.model.model.layers.1.mlp.down_proj.ia3_l").Shape);
            }
            using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, PeftAdapterFile.ConfigFileName))))
            {
                var root = json.RootElement;
                Assert.Equal("IA3", root.GetProperty("peft_type").GetString());
                Assert.Equal(["down_proj", "k_proj", "v_proj"], root.GetProperty("target_modules").EnumerateArray().Select(v => v.GetString()!).ToArray());
                Assert.Equal(["down_proj"], root.GetProperty("feedforward_modules").EnumerateArray().Select(v => v.GetString()!).ToArray());
            }

            using var fresh = new LlamaForCausalLM(Tiny, seed: 8);
            using var loaded = IA3AdapterFile.LoadInto(fresh, folder);
            float diff = MaxDiff(expected, Logits(fresh, Ids, 2, 4));
            Assert.True(diff == 0f, $"reloaded IA3 logits differ by {diff:E3}");

            using var other = new LlamaForCausalLM(Tiny with { IntermediateSize = 40 }, seed: 8);
            var e = Assert.Throws<InvalidDataException>(() => IA3AdapterFile.LoadInto(other, folder));
            Assert.Contains("expected [1, 40], found [1, 48]", e.Message);
            Assert.IsType<Linear>(other.Model.Layers[0].Mlp.DownProj); // untouched
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}
