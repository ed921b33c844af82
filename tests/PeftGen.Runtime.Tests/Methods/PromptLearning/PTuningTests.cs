using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.Generation;
using PeftGen.IO;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using Xunit;
using static PeftGen.Tests.Methods.PromptLearning.PromptTuningSupport;

namespace PeftGen.Tests.Methods.PromptLearning;

public class PTuningTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static Linear Mlp(PromptLearningModel peft, string index) =>
        (Linear)peft.Encoder("default").GetModule("mlp_head." + index);

    /// <summary>relu(x Wᵀ + b) by hand, in double.</summary>
    private static double[] Dense(double[] x, int rows, Linear layer, bool relu)
    {
        var w = layer.Weight.ToArray();
        var b = layer.Bias!.ToArray();
        int inF = layer.InFeatures, outF = layer.OutFeatures;
        var y = new double[rows * outF];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outF; o++)
            {
                double s = b[o];
                for (int i = 0; i < inF; i++) s += w[o * inF + i] * x[r * inF + i];
                y[r * outF + o] = relu ? Math.Max(0, s) : s;
            }
        return y;
    }

    [Fact]
    public void Virtual_tokens_are_the_mlp_of_the_embedding_and_enter_like_prompt_tuning()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 31);
        using var peft = PromptLearningModel.Create(model, new PTuningConfig { NumVirtualTokens = 3, EncoderHiddenSize = 10, Seed = 2 });
        var e = peft.Encoder("default").Embedding.Weight.ToArray().Select(v => (double)v).ToArray();
        var expected = Dense(Dense(Dense(e, 3, Mlp(peft, "0"), true), 3, Mlp(peft, "2"), true), 3, Mlp(peft, "4"), false);
        using var output = peft.PromptEmbeddings("default");
        var actual = output.ToArray();
        double maxErr = expected.Zip(actual, (x, y) => Math.Abs(x - y)).Max();
        Assert.True(maxErr < 1e-5, $"P-tuning encoder vs Linear→ReLU→Linear→ReLU→Linear by hand: max error {maxErr:E3}");

        // The same virtual tokens as a prompt-tuning table give the same logits.
        var adapted = Logits(model, Ids, 2, 4);
        using var twin = new LlamaForCausalLM(Tiny, seed: 31);
        using var prompt = PromptLearningModel.Create(twin, new PromptTuningConfig { NumVirtualTokens = 3 });
        prompt.Encoder("default").Embedding.Weight.CopyFrom(output);
        float diff = MaxDiff(adapted, Logits(twin, Ids, 2, 4));
        Assert.True(diff < 1e-6f, $"P-tuning vs prompt tuning with its output: {diff:E3}");
    }

    [Fact]
    public void Gradients_through_the_encoder_match_finite_differences()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 32);
        using var peft = PromptLearningModel.Create(model, new PTuningConfig { NumVirtualTokens = 2, EncoderHiddenSize = 6, Seed = 3 });
        var p = peft.NamedParameters().ToDictionary(x => x.Path, x => x.Tensor);
        GradCheck.Assert(_ => model.Forward(Ids[..4], 1, 4),
            [p["prompt_encoder.default.embedding.weight"], p["prompt_encoder.default.mlp_head.0.weight"], p["prompt_encoder.default.mlp_head.2.bias"], p["prompt_encoder.default.mlp_head.4.weight"]],
            tolerance: 3e-2f);
    }

    [Fact]
    public void Relu_gradient_matches_finite_differences()
    {
        var x = GradCheck.Param(new Random(33), 1f, 4, 6);
        var s = x.AsSpan();
        for (int i = 0; i < s.Length; i++) if (MathF.Abs(s[i]) < 0.05f) s[i] = 0.5f; // keep finite differences off the kink
        GradCheck.Assert(i => Ops.Relu(i[0]), [x], eps: 1e-2f);
    }

    [Fact]
    public void Trainable_parameters_are_the_encoder_plus_n_times_hidden()
    {
        int n = 4, hidden = Tiny.HiddenSize, h = 12;
        using var peft = PromptLearningModel.Create(new LlamaForCausalLM(Tiny, seed: 2), new PTuningConfig { NumVirtualTokens = n, EncoderHiddenSize = h });
        long encoder = (long)hidden * h + h + (long)h * h + h + (long)h * hidden + hidden;
        Assert.Equal(encoder + n * hidden, peft.TrainableParameters().Sum(t => t.Count));
        Assert.Contains($"trainable params: {encoder + n * hidden:N0}", peft.TrainableParametersSummary(), StringComparison.Ordinal);
    }

    [Fact]
    public void Invalid_configurations_are_clear_errors()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 2);
        var e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PTuningConfig { NumVirtualTokens = 0 }));
        Assert.Contains("num_virtual_tokens must be ≥ 1", e.Message);
        e = Assert.Throws<ArgumentException>(() => PromptLearningModel.Create(model, new PTuningConfig { EncoderHiddenSize = -3 }));
        Assert.Contains("encoder_hidden_size must be ≥ 1", e.Message);
        var lstm = Assert.Throws<NotSupportedException>(() => PromptLearningModel.Create(model, new PTuningConfig { EncoderType = PromptEncoderType.Lstm }));
        Assert.Contains("LSTM", lstm.Message);
        Assert.Null(model.Model.PromptLearning);
    }

    [Fact]
    public void Training_lowers_the_loss()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 7);
        using var peft = PromptLearningModel.Create(model, new PTuningConfig { NumVirtualTokens = 4, EncoderHiddenSize = 16 });
        var (first, last) = Train(model, peft.TrainableParameters(), steps: 25, learningRate: 0.01f);
        output.WriteLine(FormattableString.Invariant($"PTuning: loss {first:F4} -> {last:F4}"));
        Assert.True(last < 0.9f * first, $"P-tuning: loss {first:F4} → {last:F4}");
    }

    [Fact]
    public void Saves_the_encoder_output_and_generates_the_same_after_loading()
    {
        string folder = Path.Combine(Path.GetTempPath(), "peftgen-ptuning-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var model = new LlamaForCausalLM(Tiny, seed: 34);
            var peft = PromptLearningModel.Create(model, new PTuningConfig { NumVirtualTokens = 3, EncoderHiddenSize = 8, Seed = 5 });
            var expected = Logits(model, Ids, 2, 4);
            var generated = new TextGenerator(model, new ToyTokenizer()).GenerateIds([1, 5], SamplingOptions.Greedy(5) with { StopAtEos = false });
            Assert.Equal(GreedyWithoutCache(model, [1, 5], 5), generated);
            PromptLearningAdapterFile.Save(peft, folder);
            using (var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapterFile.WeightsFileName)))
                Assert.Equal(["prompt_embeddings"], file.TensorNames.ToArray());
            using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, PeftAdapterFile.ConfigFileName))))
            {
                Assert.Equal("P_TUNING", json.RootElement.GetProperty("peft_type").GetString());
                Assert.Equal("MLP", json.RootElement.GetProperty("encoder_reparameterization_type").GetString());
                Assert.Equal(8, json.RootElement.GetProperty("encoder_hidden_size").GetInt32());
            }
            using var fresh = new LlamaForCausalLM(Tiny, seed: 34);
            using var loaded = PromptLearningAdapterFile.LoadInto(fresh, folder);
            float diff = MaxDiff(expected, Logits(fresh, Ids, 2, 4));
            Assert.True(diff < 1e-6f, $"reloaded P-tuning logits differ by {diff:E3}");
            Assert.Equal(generated, new TextGenerator(fresh, new ToyTokenizer()).GenerateIds([1, 5], SamplingOptions.Greedy(5) with { StopAtEos = false }));
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}
