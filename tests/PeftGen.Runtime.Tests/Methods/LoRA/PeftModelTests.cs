using PeftGen.Autograd;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Methods.LoRA;

public class PeftModelTests
{
    internal static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = 16, MaxPositionEmbeddings = 16, TieWordEmbeddings = false,
    };

    private static readonly int[] Ids = [1, 5, 7, 3, 9, 2, 4, 8];

    private static float[] Logits(LlamaForCausalLM model)
    {
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        return model.Forward(Ids, 2, 4).ToArray();
    }

    private static void RandomizeB(PeftModel<LlamaForCausalLM> peft, string adapter, int seed)
    {
        var random = new Random(seed);
        foreach (var (_, layer) in peft.LoRALayers)
        {
            if (!layer.AdapterNames.Contains(adapter)) continue;
            var b = layer.LoraB(adapter).AsSpan();
            for (int i = 0; i < b.Length; i++) b[i] = (float)(random.NextGaussian() * 0.2);
        }
    }

    private static float MaxDiff(float[] a, float[] b) => a.Zip(b, (x, y) => MathF.Abs(x - y)).Max();

    [Fact]
    public void List_targets_match_exact_names_and_suffixes()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig { Targets = TargetModules.Parse("q_proj,v_proj") });
        Assert.Equal(
            ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"],
            peft.LoRALayers.Select(l => l.Path).ToArray());
        Assert.IsType<LoRALinear>(peft.Model.Model.Layers[1].SelfAttn.VProj); // the typed property follows the replacement
    }

    [Fact]
    public void All_linear_excludes_the_output_head_and_regex_matches_whole_paths()
    {
        using var all = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig { Targets = TargetModules.AllLinear });
        Assert.Equal(14, all.LoRALayers.Count());
        Assert.DoesNotContain(all.LoRALayers, l => l.Path.Contains("lm_head"));
        using var regex = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig { Targets = TargetModules.Parse(@"model\.layers\.1\.mlp\..*_proj") });
        Assert.Equal(["model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"], regex.LoRALayers.Select(l => l.Path).ToArray());
    }

    [Fact]
    public void Layers_and_exclusions_filter_targets()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig
        {
            Targets = TargetModules.AllLinear, Layers = [1], Exclude = ["down_proj", "o_proj"],
        });
        Assert.All(peft.LoRALayers, l => Assert.StartsWith("model.layers.1.", l.Path));
        Assert.Equal(5, peft.LoRALayers.Count());
    }

    [Fact]
    public void Unknown_target_is_an_error_with_a_suggestion()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 1);
        var e = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, new LoRAConfig { Targets = TargetModules.Parse("q_prj,v_proj") }));
        Assert.Contains("'q_prj'", e.Message);
        Assert.Contains("Did you mean 'q_proj'?", e.Message);
    }

    [Fact]
    public void Rank_above_layer_size_is_an_error_naming_the_layer()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 1);
        var e = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, new LoRAConfig { Rank = 20, Targets = TargetModules.Parse("k_proj") }));
        Assert.Contains("k_proj", e.Message);
        Assert.Contains("min(in, out) = 16", e.Message);
    }

    [Fact]
    public void Only_adapters_train_and_the_counts_match_the_formula()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig { Rank = 4, Targets = TargetModules.AllLinear, UseDoRA = true });
        long expected = peft.LoRALayers.Sum(l => 4L * (l.Layer.InFeatures + l.Layer.OutFeatures) + l.Layer.OutFeatures);
        Assert.Equal(expected, peft.Model.CountParameters().Trainable);
        Assert.Equal(expected, peft.Plan().Sum(p => p.TrainableParameters));
        Assert.All(peft.Model.NamedParameters().Where(p => p.Tensor.RequiresGrad), p => Assert.Matches(@"\.lora_(A|B|magnitude_vector)\.default\.weight$", p.Path));
        Assert.Contains("trainable params: ", peft.TrainableParametersSummary());
    }

    [Fact]
    public void Adapters_can_be_switched_disabled_and_deleted()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 1);
        var baseline = Logits(model);
        using var peft = PeftModel.Create(model, new LoRAConfig { Targets = TargetModules.AllLinear });
        peft.AddAdapter("other", new LoRAConfig { Targets = TargetModules.Parse("q_proj"), Rank = 2, Seed = 3 });
        RandomizeB(peft, "default", 1);
        RandomizeB(peft, "other", 2);
        Assert.Equal(["default"], peft.ActiveAdapters);
        var withDefault = Logits(model);
        Assert.True(MaxDiff(baseline, withDefault) > 1e-3f);
        using (peft.DisableAdapters())
            Assert.Equal(baseline, Logits(model));
        Assert.Equal(withDefault, Logits(model));
        peft.SetAdapter("other");
        var withOther = Logits(model);
        Assert.True(MaxDiff(withDefault, withOther) > 1e-3f);
        Assert.All(peft.Model.NamedParameters().Where(p => p.Tensor.RequiresGrad), p => Assert.Contains(".other.", p.Path));
        peft.DeleteAdapter("other");
        peft.SetAdapter("default");
        Assert.Equal(withDefault, Logits(model));
        Assert.Equal(["default"], peft.Adapters);
    }

    [Fact]
    public void Cat_combination_is_exactly_the_weighted_sum_of_updates()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig { Rank = 2, Alpha = 4, Targets = TargetModules.Parse("q_proj") });
        peft.AddAdapter("b", new LoRAConfig { Rank = 3, Alpha = 3, Targets = TargetModules.Parse("q_proj"), Seed = 5 });
        RandomizeB(peft, "default", 1);
        RandomizeB(peft, "b", 2);
        peft.AddWeightedAdapter(["default", "b"], [0.7f, -0.4f], "mix", "cat");
        foreach (var (path, layer) in peft.LoRALayers)
        {
            var d1 = layer.Delta("default").ToArray();
            var d2 = layer.Delta("b").ToArray();
            var mix = layer.Delta("mix").ToArray();
            float err = Enumerable.Range(0, mix.Length).Max(i => MathF.Abs(mix[i] - (0.7f * d1[i] - 0.4f * d2[i])));
            Assert.True(err < 1e-5f, $"{path}: max |ΔW_mix − Σ w ΔW| = {err:E3}");
            Assert.Equal(5, layer.GetSettings("mix").Rank);
        }
    }

    [Fact]
    public void Linear_combination_follows_peft_for_equal_ranks_and_refuses_unequal_ones()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig { Rank = 2, Alpha = 4, Targets = TargetModules.Parse("q_proj") });
        peft.AddAdapter("b", new LoRAConfig { Rank = 2, Alpha = 2, Targets = TargetModules.Parse("q_proj"), Seed = 5 });
        RandomizeB(peft, "default", 1);
        RandomizeB(peft, "b", 2);
        peft.AddWeightedAdapter(["default", "b"], [0.5f, 0.5f], "lin", "linear");
        var layer = peft.LoRALayers.First().Layer;
        var a = layer.LoraA("lin").ToArray();
        var a1 = layer.LoraA("default").ToArray();
        var a2 = layer.LoraA("b").ToArray();
        for (int i = 0; i < a.Length; i++)
            Assert.Equal(MathF.Sqrt(0.5f) * 2f * a1[i] + MathF.Sqrt(0.5f) * 1f * a2[i], a[i], 5);
        peft.AddAdapter("c", new LoRAConfig { Rank = 3, Targets = TargetModules.Parse("q_proj") });
        Assert.Throws<ArgumentException>(() => peft.AddWeightedAdapter(["default", "c"], [1f, 1f], "bad", "linear"));
    }

    [Fact]
    public void Merge_and_unload_gives_a_plain_model_with_the_same_outputs()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig { Targets = TargetModules.AllLinear, UseDoRA = true });
        RandomizeB(peft, "default", 1);
        var adapted = Logits(peft.Model);
        peft.Merge();
        Assert.True(MaxDiff(adapted, Logits(peft.Model)) < 1e-4f);
        peft.Unmerge();
        var model = peft.MergeAndUnload();
        Assert.DoesNotContain(model.NamedModules(), m => m.Module is LoRALinear);
        float err = MaxDiff(adapted, Logits(model));
        Assert.True(err < 1e-4f, $"merged model logits differ by {err:E3}");
    }

    [Fact]
    public void QLoRA_quantizes_targeted_bases_and_merges_into_a_float_copy()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 1);
        var peft = PeftModel.Create(model, new LoRAConfig { Targets = TargetModules.AllLinear }, new QuantizationConfig(QuantType.NF4, DoubleQuant: true, BlockSize: 32));
        Assert.All(peft.LoRALayers, l => Assert.IsType<Linear4Bit>(l.Layer.BaseLayer));
        Assert.All(peft.Plan(), p => Assert.True(p.Quantized));
        RandomizeB(peft, "default", 1);
        var adapted = Logits(model);
        var e = Assert.Throws<InvalidOperationException>(() => peft.Merge());
        Assert.Contains("16-bit copy", e.Message);
        var merged = peft.MergeAndUnload(DType.BFloat16);
        float err = MaxDiff(adapted, Logits(merged));
        Assert.True(err < 0.05f, $"bf16 merge changes logits by {err:E3} (rounding only)");
        Assert.All(merged.NamedModules().Where(m => m.Path.EndsWith("_proj")), m => Assert.IsType<Linear>(m.Module));
    }

    [Fact]
    public void Gradient_checkpointing_gives_the_same_gradients()
    {
        float[] Grads(bool checkpoint)
        {
            using var peft = PeftModel.Create(new LlamaForCausalLM(Tiny, seed: 1), new LoRAConfig { Targets = TargetModules.AllLinear, Dropout = 0.1f, Seed = 9 });
            RandomizeB(peft, "default", 1);
            if (checkpoint) peft.Model.Model.EnableGradientCheckpointing(peft.DropoutRng);
            using (TensorScope.Begin()) peft.Model.Loss(Ids, [5, 7, 3, 9, 2, 4, 8, 1], 2, 4).Backward();
            return peft.TrainableParameters().SelectMany(p => p.Grad!.ToArray()).ToArray();
        }
        var plain = Grads(false);
        var checkpointed = Grads(true);
        float err = MaxDiff(plain, checkpointed);
        Assert.True(err < 1e-6f, $"checkpointed gradients differ by {err:E3}");
    }
}
