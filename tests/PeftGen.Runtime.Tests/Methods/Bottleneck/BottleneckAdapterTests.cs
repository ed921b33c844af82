using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Methods.Bottleneck;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using PeftGen.Tests.Training;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Methods.Bottleneck;

public class BottleneckAdapterTests(Xunit.Abstractions.ITestOutputHelper output)
{
    internal static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = 10, MaxPositionEmbeddings = 16, TieWordEmbeddings = true,
    };

    private static BottleneckAdapter Adapter(BottleneckActivation activation, int d = 6, int m = 3, int seed = 1)
    {
        var adapter = new BottleneckAdapter(d, m, activation, bias: true, new Rng((ulong)seed));
        var random = new Random(seed);
        foreach (var (_, p) in adapter.NamedParameters())
        {
            var s = p.AsSpan();
            for (int i = 0; i < s.Length; i++) s[i] = (float)(random.NextGaussian() * 0.7);
        }
        return adapter;
    }

    /// <summary>erf by its Taylor series in double (exact to ~1e-12 for |x| ≤ 3).</summary>
    private static double Erf(double x)
    {
        double sum = 0, term = x;
        for (int n = 0; n < 80; n++)
        {
            sum += term / (2 * n + 1);
            term *= -x * x / (n + 1);
        }
        return 2 / Math.Sqrt(Math.PI) * sum;
    }

    private static double Sigma(BottleneckActivation activation, double z) => activation switch
    {
        BottleneckActivation.Relu => Math.Max(0, z),
        BottleneckActivation.Gelu => 0.5 * z * (1 + Erf(z / Math.Sqrt(2))),
        _ => z / (1 + Math.Exp(-z)),
    };

    [Theory]
    [InlineData(BottleneckActivation.Relu)]
    [InlineData(BottleneckActivation.Gelu)]
    [InlineData(BottleneckActivation.Silu)]
    public void Output_is_h_plus_W_up_sigma_of_W_down_h_by_hand(BottleneckActivation activation)
    {
        const int d = 6, m = 3;
        using var adapter = Adapter(activation, d, m);
        using var x = Tensor.RandN([2, 4, d], new Random(5));
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        var actual = adapter.Forward(x).ToArray();
        float[] h = x.ToArray(), wd = adapter.Down.Weight.ToArray(), bd = adapter.Down.Bias!.ToArray(), wu = adapter.Up.Weight.ToArray(), bu = adapter.Up.Bias!.ToArray();
        double maxErr = 0;
        for (int row = 0; row < 8; row++)
        {
            var a = new double[m];
            for (int j = 0; j < m; j++)
            {
                double z = bd[j];
                for (int c = 0; c < d; c++) z += wd[j * d + c] * h[row * d + c];       // W_down [m, d]
                a[j] = Sigma(activation, z);
            }
            for (int c = 0; c < d; c++)
            {
                double y = h[row * d + c] + bu[c];
                for (int j = 0; j < m; j++) y += wu[c * m + j] * a[j];                   // W_up [d, m]
                maxErr = Math.Max(maxErr, Math.Abs(y - actual[row * d + c]));
            }
        }
        output.WriteLine($"{activation}: max |adapter − closed form| = {maxErr:E3}");
        Assert.True(maxErr < 2e-6, $"{activation}: max |adapter − closed form| = {maxErr:E3}");
    }

    [Fact]
    public void Gelu_matches_known_values()
    {
        // GELU(x) = x·Φ(x): Φ(1) = 0.8413447460685429, Φ(−1) = 0.15865525393145707, Φ(0.5) = 0.6914624612740131.
        (float X, double Expected)[] cases = [(1f, 0.8413447460685429), (-1f, -0.15865525393145707), (0.5f, 0.34573123063700656), (3f, 2.9959502)];
        double maxErr = cases.Max(c => Math.Abs(c.X * BottleneckActivations.NormalCdf(c.X) - c.Expected));
        Assert.True(maxErr < 1e-6, $"max |GELU − reference| = {maxErr:E3}");
    }

    [Theory]
    [InlineData(BottleneckActivation.Relu, 11)]
    [InlineData(BottleneckActivation.Gelu, 12)]
    [InlineData(BottleneckActivation.Silu, 13)]
    public void Gradients_match_finite_differences(BottleneckActivation activation, int seed)
    {
        using var adapter = Adapter(activation, 6, 4, seed);
        var x = GradCheck.Param(new Random(seed + 100), 1f, 2, 3, 6);
        GradCheck.Assert(inputs => adapter.Forward(inputs[0]),
            [x, adapter.Down.Weight, adapter.Down.Bias!, adapter.Up.Weight, adapter.Up.Bias!], eps: 1e-3f, tolerance: 2e-2f);
    }

    [Fact]
    public void A_new_adapter_is_the_identity_and_disabling_restores_the_base()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        int[] ids = [1, 2, 3, 4, 5, 6];
        float[] before;
        using (GradMode.Disable())
        using (TensorScope.Begin())
            before = model.Forward(ids, 1, 6).ToArray();
        using var bottleneck = BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = 8, Activation = BottleneckActivation.Gelu });
        using var noGrad = GradMode.Disable();
        using (TensorScope.Begin())
            Assert.Equal(before, model.Forward(ids, 1, 6).ToArray()); // W_up = 0, b_up = 0: exactly the base
        foreach (var (_, a) in bottleneck.Adapters) a.Up.Weight.AsSpan().Fill(0.05f);
        using (TensorScope.Begin())
            Assert.NotEqual(before, model.Forward(ids, 1, 6).ToArray());
        using (bottleneck.DisableAdapters())
        using (TensorScope.Begin())
            Assert.Equal(before, model.Forward(ids, 1, 6).ToArray());
    }

    [Theory]
    [InlineData(BottleneckPlacement.Both, true, 4)]
    [InlineData(BottleneckPlacement.Attention, true, 2)]
    [InlineData(BottleneckPlacement.Mlp, false, 2)]
    public void Trainable_parameters_follow_2dm_plus_d_plus_m_per_placement(BottleneckPlacement placement, bool bias, int adapters)
    {
        const int d = 32;
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        using var bottleneck = BottleneckModel.Create(model, new BottleneckConfig { ReductionFactor = 4, Placement = placement, Bias = bias });
        int m = d / 4;
        long perAdapter = 2L * d * m + (bias ? d + m : 0);                                  // with biases: 2·32·8 + 32 + 8 = 552
        Assert.Equal(m, bottleneck.BottleneckSize);
        Assert.Equal(adapters * perAdapter, model.CountParameters().Trainable);
        Assert.Equal(adapters, bottleneck.Plan().Count);
        Assert.All(bottleneck.Plan(), s => Assert.Equal(perAdapter, s.TrainableParameters));
        Assert.All(model.NamedParameters().Where(p => p.Tensor.RequiresGrad), p => Assert.Contains("_adapter.", p.Path));
        output.WriteLine(bottleneck.TrainableParametersSummary());
    }

    [Theory]
    [InlineData(0, 16, "Bottleneck size must be ≥ 1 (got 0)")]
    [InlineData(33, 16, "Bottleneck size 33 exceeds the hidden size 32")]
    [InlineData(null, 64, "leaves hidden size 32 / 64 = 0 bottleneck channels")]
    [InlineData(null, 0, "reduction factor must be ≥ 1 (got 0)")]
    public void Invalid_sizes_are_clear_errors_and_leave_the_model_untouched(int? size, int factor, string message)
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        var e = Assert.Throws<ArgumentException>(() => BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = size, ReductionFactor = factor }));
        Assert.Contains(message, e.Message);
        Assert.Equal(model.CountParameters().Total, model.CountParameters().Trainable);  // not frozen: nothing changed
    }

    [Fact]
    public void Unknown_layers_and_double_insertion_are_clear_errors()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        var e = Assert.Throws<ArgumentException>(() => BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = 4, Layers = [2] }));
        Assert.Contains("layer index 2 does not exist: the model has 2 decoder layers", e.Message);
        BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = 4, Layers = [1] });
        e = Assert.Throws<ArgumentException>(() => BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = 4 }));
        Assert.Contains("'model.layers.1' already holds an adapter", e.Message);
    }

    [Fact]
    public void Training_the_adapters_lowers_the_loss()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        using var bottleneck = BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = 16, Activation = BottleneckActivation.Gelu, Seed = 2 });
        var options = new TrainerOptions { MaxSteps = 30, LearningRate = 3e-2f, MaxGradNorm = 1f };
        using var trainer = new Trainer(bottleneck, BatchSource.FromFunction(p => TrainerTests.DigitBatch(p, steps: [1])), options);  // count up by one: next = current + 1
        var losses = trainer.Train().Losses;
        float first = losses.Take(3).Average(), last = losses.TakeLast(3).Average();
        output.WriteLine($"loss {first:F4} → {last:F4}");
        Assert.True(last < first - 0.3f, $"bottleneck training should lower the loss: first 3 steps {first:F4}, last 3 {last:F4}");
    }

    [Fact]
    public void Save_and_load_round_trip_in_the_BOTTLENECK_format()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"peftgen-bottleneck-{Guid.NewGuid():N}");
        try
        {
            int[] ids = [3, 1, 4, 1, 5, 9];
            float[] expected;
            var config = new BottleneckConfig { BottleneckSize = 4, Placement = BottleneckPlacement.Mlp, Activation = BottleneckActivation.Silu, Layers = [1] };
            using (var model = new LlamaForCausalLM(Tiny, seed: 3))
            {
                var bottleneck = BottleneckModel.Create(model, config);
                var random = new Random(9);
                foreach (var (_, p) in model.NamedParameters().Where(p => p.Tensor.RequiresGrad))
                    foreach (ref float v in p.AsSpan()) v = (float)random.NextGaussian() * 0.1f;
                using (GradMode.Disable())
                using (TensorScope.Begin())
                    expected = model.Forward(ids, 1, 6).ToArray();
                BottleneckAdapterFile.Save(bottleneck, dir, "tiny-llama");
            }
            using var config_json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")));
            Assert.Equal("BOTTLENECK", config_json.RootElement.GetProperty("peft_type").GetString());
            Assert.Equal("silu", config_json.RootElement.GetProperty("non_linearity").GetString());
            using (var file = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
                Assert.Equal(
                    ["base_model.model.model.layers.1.mlp_adapter.adapter_down.bias", "base_model.model.model.layers.1.mlp_adapter.adapter_down.weight",
                     "base_model.model.model.layers.1.mlp_adapter.adapter_up.bias", "base_model.model.model.layers.1.mlp_adapter.adapter_up.weight"],
                    file.TensorNames.Order(StringComparer.Ordinal));

            using var fresh = new LlamaForCausalLM(Tiny, seed: 3);
            var loaded = BottleneckAdapterFile.LoadInto(fresh, dir);
            Assert.Equal(config.Placement, loaded.Config.Placement);
            using (GradMode.Disable())
            using (TensorScope.Begin())
                Assert.Equal(expected, fresh.Forward(ids, 1, 6).ToArray());

            var wide = Tiny with { HiddenSize = 64, IntermediateSize = 64 };
            using var other = new LlamaForCausalLM(wide, seed: 3);
            var e = Assert.Throws<InvalidDataException>(() => BottleneckAdapterFile.LoadInto(other, dir));
            Assert.Contains("hidden_size 32 does not match the model's 64", e.Message);
            Assert.Equal(other.CountParameters().Total, other.CountParameters().Trainable);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_weights_file_that_does_not_fit_lists_every_mismatch()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"peftgen-bottleneck-{Guid.NewGuid():N}");
        try
        {
            using (var model = new LlamaForCausalLM(Tiny, seed: 3))
                BottleneckAdapterFile.Save(BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = 4, Placement = BottleneckPlacement.Attention }), dir);
            // Claim both placements: every mlp_adapter key is then missing.
            var configPath = Path.Combine(dir, "adapter_config.json");
            File.WriteAllText(configPath, File.ReadAllText(configPath).Replace("\"attention\"", "\"both\""));
            using var fresh = new LlamaForCausalLM(Tiny, seed: 3);
            var e = Assert.Throws<InvalidDataException>(() => BottleneckAdapterFile.LoadInto(fresh, dir));
            Assert.Contains("(8 mismatches)", e.Message);
            Assert.Contains("'base_model.model.model.layers.0.mlp_adapter.adapter_down.weight' [4, 32] is missing", e.Message);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
