using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.Generation;
using PeftGen.IO;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using Xunit;
using static PeftGen.Tests.Methods.PromptLearning.PromptTuningSupport;

namespace PeftGen.Tests.Methods.PromptLearning;

public class PrefixTuningTests(Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>
    /// Fills the prefix table with the keys (after RoPE at positions 0..n−1) and values the base model computes for
    /// <paramref name="tokens"/>, in PEFT's layout: row j, block 2l = layer l's key of token j, block 2l + 1 its value.
    /// </summary>
    private static void UseTokensAsPrefix(PromptLearningModel peft, int[] tokens)
    {
        var model = peft.Model;
        var c = model.Config;
        int n = tokens.Length, hkv = c.KeyValueHeads, d = c.HeadDim, kvDim = hkv * d, width = c.NumHiddenLayers * 2 * kvDim;
        var table = peft.Encoder(peft.ActiveAdapter).Embedding.Weight.AsSpan();
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        var h = model.Model.EmbedTokens.Forward(tokens, 1, n);                                  // [1, n, hidden]
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var layer = model.Model.Layers[l];
            var xn = layer.InputLayerNorm.Forward(h);
            var k = Ops.Rope(layer.SelfAttn.KProj.Forward(xn).Reshape(1, n, hkv, d), 0, c.RopeTheta, c.RopeInterleaved).ToArray();
            var v = layer.SelfAttn.VProj.Forward(xn).ToArray();
            for (int j = 0; j < n; j++)
            {
                k.AsSpan(j * kvDim, kvDim).CopyTo(table.Slice(j * width + 2 * l * kvDim, kvDim));
                v.AsSpan(j * kvDim, kvDim).CopyTo(table.Slice(j * width + (2 * l + 1) * kvDim, kvDim));
            }
            h = layer.Forward(h);
        }
    }

    [Fact]
    public void Attention_behind_a_prefix_matches_a_naive_reference_and_finite_differences()
    {
        var random = new Random(21);
        int b = 2, n = 3, t = 4, hq = 4, hkv = 2, d = 4;
        var q = GradCheck.Param(random, 1f, b, t, hq, d);
        var k = GradCheck.Param(random, 1f, b, n + t, hkv, d);
        var v = GradCheck.Param(random, 1f, b, n + t, hkv, d);
        float[] actual;
        using (GradMode.Disable())
        using (TensorScope.Begin()) actual = Ops.CausalAttentionWithPrefix(q, k, v).ToArray();
        float[] qs = q.ToArray(), ks = k.ToArray(), vs = v.ToArray();
        double maxErr = 0;
        for (int bi = 0; bi < b; bi++)
            for (int i = 0; i < t; i++)
                for (int h = 0; h < hq; h++)
                {
                    int kvh = h / (hq / hkv), seen = n + i + 1;
                    var scores = new double[seen];
                    for (int j = 0; j < seen; j++)
                        for (int c = 0; c < d; c++)
                            scores[j] += qs[((bi * t + i) * hq + h) * d + c] * ks[((bi * (n + t) + j) * hkv + kvh) * d + c] / Math.Sqrt(d);
                    double max = scores.Max(), sum = scores.Sum(s => Math.Exp(s - max));
                    for (int c = 0; c < d; c++)
                    {
                        double y = 0;
                        for (int j = 0; j < seen; j++) y += Math.Exp(scores[j] - max) / sum * vs[((bi * (n + t) + j) * hkv + kvh) * d + c];
                        maxErr = Math.Max(maxErr, Math.Abs(y - actual[((bi * t + i) * hq + h) * d + c]));
                    }
                }
        Assert.True(maxErr < 1e-5, $"prefix attention vs naive: max error {maxErr:E3}");
        GradCheck.Assert(x => Ops.CausalAttentionWithPrefix(x[0], x[1], x[2]), [q, k, v]);
    }

    [Fact]
    public void Prefix_keys_and_values_act_like_tokens_at_positions_0_to_n_minus_1()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 22);
        int[] prefixTokens = [6, 10, 12];
        var tokens = new[] { 1, 5, 7, 3 };
        var reference = Logits(model, [.. prefixTokens, .. tokens], 1, 7).AsSpan(3 * 16).ToArray();
        using var peft = PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 3 });
        UseTokensAsPrefix(peft, prefixTokens);
        float diff = MaxDiff(reference, Logits(model, tokens, 1, 4));
        Assert.True(diff < 1e-5f, $"prefix tuning vs the model run on [prefix tokens; tokens]: max diff {diff:E3}");
        var batched = Logits(model, [.. tokens, .. tokens], 2, 4);
        Assert.True(MaxDiff(batched.AsSpan(4 * 16).ToArray(), reference) < 1e-5f, "the prefix differs across the batch");
    }

    [Fact]
    public void Gradients_of_the_prefix_and_of_its_mlp_match_finite_differences()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 23);
        using var peft = PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 2, Seed = 5 });
        var table = peft.Encoder("default").Embedding.Weight;
        Fill(table, new Random(3), 0.5f);
        GradCheck.Assert(_ => model.Forward(Ids, 2, 4), [table], tolerance: 3e-2f);

        using var projected = new LlamaForCausalLM(Tiny, seed: 23);
        using var mlp = PromptLearningModel.Create(projected, new PrefixTuningConfig { NumVirtualTokens = 2, PrefixProjection = true, EncoderHiddenSize = 8, Seed = 5 });
        var parameters = mlp.NamedParameters().ToList();
        Assert.Equal(["prompt_encoder.default.embedding.weight", "prompt_encoder.default.transform.0.weight", "prompt_encoder.default.transform.0.bias",
            "prompt_encoder.default.transform.2.weight", "prompt_encoder.default.transform.2.bias"], parameters.Select(p => p.Path).ToArray());
        GradCheck.Assert(_ => projected.Forward(Ids[..4], 1, 4), [parameters[0].Tensor, parameters[1].Tensor, parameters[2].Tensor], tolerance: 3e-2f);
    }

    [Fact]
    public void Tanh_gradient_matches_finite_differences()
    {
        var x = GradCheck.Param(new Random(24), 1.5f, 3, 5);
        GradCheck.Assert(i => Ops.Tanh(i[0]), [x], eps: 1e-3f);
    }

    [Fact]
    public void Trainable_parameters_follow_the_formula()
    {
        int layers = Tiny.NumHiddenLayers, kv = Tiny.KeyValueHeads * Tiny.HeadDim, n = 5, hidden = 8;
        using var plain = PromptLearningModel.Create(new LlamaForCausalLM(Tiny, seed: 2), new PrefixTuningConfig { NumVirtualTokens = n });
        Assert.Equal((long)layers * 2 * n * kv, plain.TrainableParameters().Sum(t => t.Count));
        using var projected = PromptLearningModel.Create(new LlamaForCausalLM(Tiny, seed: 2), new PrefixTuningConfig { NumVirtualTokens = n, PrefixProjection = true, EncoderHiddenSize = hidden });
        long mlp = (long)kv * hidden + hidden + (long)hidden * layers * 2 * kv + layers * 2 * kv;
        Assert.Equal(n * kv + mlp, projected.TrainableParameters().Sum(t => t.Count));
    }

    [Fact]
    public void Invalid_configurations_are_clear_errors()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 2);
        var e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 0 }));
        Assert.Contains("num_virtual_tokens must be ≥ 1", e.Message);
        e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 30 }));
        Assert.Contains("leaves no position for the input", e.Message);
        e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PrefixTuningConfig { PrefixProjection = true, EncoderHiddenSize = 0 }));
        Assert.Contains("encoder_hidden_size must be ≥ 1", e.Message);
        model.Model.EnableGradientCheckpointing();
        e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 2 }));
        Assert.Contains("gradient checkpointing", e.Message);
        model.Model.DisableGradientCheckpointing();
        using var peft = PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 2 });
        model.Model.EnableGradientCheckpointing();
        var fail = Assert.Throws<InvalidOperationException>(() => model.Loss(Ids, Ids, 2, 4));
        Assert.Contains("gradient checkpointing", fail.Message);
    }

    [Fact]
    public void Training_lowers_the_loss()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 7);
        using var peft = PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 4, PrefixProjection = true, EncoderHiddenSize = 16 });
        var (first, last) = Train(model, peft.TrainableParameters(), steps: 25, learningRate: 0.01f);
        output.WriteLine(FormattableString.Invariant($"PrefixTuning: loss {first:F4} -> {last:F4}"));
        Assert.True(last < 0.9f * first, $"prefix tuning: loss {first:F4} → {last:F4}");
    }

    [Fact]
    public void Greedy_generation_with_the_kv_cache_equals_the_hand_built_reference()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 25);
        int[] prefixTokens = [6, 10, 12];
        int[] prompt = [1, 5, 7];
        var reference = GreedyWithoutCache(model, [.. prefixTokens, .. prompt], 6)[3..];
        using var peft = PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 3 });
        UseTokensAsPrefix(peft, prefixTokens);
        var generated = new TextGenerator(model, new ToyTokenizer()).GenerateIds(prompt, SamplingOptions.Greedy(6) with { StopAtEos = false });
        Assert.Equal(reference, generated);
        Assert.Equal(GreedyWithoutCache(model, prompt, 6), generated);
    }

    [Fact]
    public void Saves_the_prefix_and_loads_it_in_peft_format()
    {
        string folder = Path.Combine(Path.GetTempPath(), "peftgen-prefix-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = new LlamaForCausalLM(Tiny, seed: 26);
            var peft = PromptLearningModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 3, PrefixProjection = true, EncoderHiddenSize = 8, Seed = 2 });
            var expected = Logits(model, Ids, 2, 4);
            PromptLearningAdapterFile.Save(peft, folder);
            int kvDim = Tiny.KeyValueHeads * Tiny.HeadDim;
            using (var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapterFile.WeightsFileName)))
                Assert.Equal([3, Tiny.NumHiddenLayers * 2 * kvDim], file.GetInfo("prompt_embeddings").Shape); // the MLP's output, as PEFT saves
            using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, PeftAdapterFile.ConfigFileName))))
            {
                var root = json.RootElement;
                Assert.Equal("PREFIX_TUNING", root.GetProperty("peft_type").GetString());
                Assert.Equal(kvDim, root.GetProperty("token_dim").GetInt32());             // GQA: PEFT's kv width
                Assert.Equal(Tiny.KeyValueHeads, root.GetProperty("num_attention_heads").GetInt32());
                Assert.True(root.GetProperty("prefix_projection").GetBoolean());
                Assert.Equal(8, root.GetProperty("encoder_hidden_size").GetInt32());
            }
            using var fresh = new LlamaForCausalLM(Tiny, seed: 26);
            using var loaded = PromptLearningAdapterFile.LoadInto(fresh, folder);
            float diff = MaxDiff(expected, Logits(fresh, Ids, 2, 4));
            Assert.True(diff < 1e-6f, $"reloaded prefix logits differ by {diff:E3}");
            Assert.IsType<PrefixTuningConfig>(PromptLearningAdapterFile.ReadConfig(Path.Combine(folder, PeftAdapterFile.ConfigFileName)));

            using var deeper = new LlamaForCausalLM(Tiny with { NumHiddenLayers = 3 }, seed: 1);
            var e = Assert.Throws<InvalidDataException>(() => PromptLearningAdapterFile.LoadInto(deeper, folder));
            Assert.Contains("num_layers is 2 but the model has 3", e.Message);
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}
