using PeftGen.Data;
using PeftGen.Methods.LoRA;
using PeftGen.Methods;
using PeftGen.Models.Llama;
using PeftGen.Optim;
using PeftGen.Tensors;
using PeftGen.Tests.Methods.Bottleneck;
using PeftGen.Tests.Methods.LoRA;
using PeftGen.Tests.Training;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Optim;

public class LayerwiseLrTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly LlamaConfig Untied = BottleneckAdapterTests.Tiny with { NumHiddenLayers = 4, TieWordEmbeddings = false };

    private static Trainer FullFineTuneTrainer(LlamaForCausalLM model, TrainerOptions options) =>
        new(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), BatchSource.FromFunction(p => TrainerTests.DigitBatch(p)), options);

    /// <summary>lr multiplier of each parameter path, read from the optimizer's groups.</summary>
    private static Dictionary<string, float> ScaleByPath(PeftGen.Nn.Module model, IOptimizer optimizer)
    {
        var byTensor = new Dictionary<Tensor, float>(ReferenceEqualityComparer.Instance);
        foreach (var group in optimizer.Groups)
            foreach (var p in group.Parameters) byTensor.Add(p, group.LearningRateScale);
        return model.NamedParameters().Where(p => byTensor.ContainsKey(p.Tensor)).ToDictionary(p => p.Path, p => byTensor[p.Tensor]);
    }

    [Fact]
    public void Groups_have_the_formula_rates_for_layers_embedding_norm_and_head()
    {
        const float decay = 0.8f, lr = 1e-3f;
        const int L = 4;
        using var model = new LlamaForCausalLM(Untied, seed: 3);
        using var trainer = FullFineTuneTrainer(model, new TrainerOptions { MaxSteps = 1, LearningRate = lr, LayerwiseLearningRateDecay = decay });
        var scales = ScaleByPath(model, trainer.Optimizer);
        Assert.Equal(model.NamedParameters().Count(), scales.Count);
        Assert.Equal(L + 1, trainer.Optimizer.Groups.Count);                               // layers 0..L−2, embedding, rate 1 (last layer, norm, head)
        double maxErr = 0;
        foreach (var (path, scale) in scales)
        {
            double expected = path.StartsWith("model.embed_tokens.", StringComparison.Ordinal) ? Math.Pow(decay, L)
                : path.StartsWith("model.layers.", StringComparison.Ordinal) ? Math.Pow(decay, L - 1 - int.Parse(path.Split('.')[2]))
                : 1.0;                                                                      // model.norm, lm_head
            maxErr = Math.Max(maxErr, Math.Abs(lr * scale - lr * expected) / (lr * expected));
        }
        output.WriteLine($"max relative error of group rates = {maxErr:E3}");
        Assert.True(maxErr < 1e-6, $"max relative error of group rates vs lr·decay^(L−1−layer) = {maxErr:E3}");
        Assert.Equal(1f, scales["lm_head.weight"]);
        Assert.Equal(1f, scales["model.norm.weight"]);
    }

    [Fact]
    public void The_first_AdamW_step_moves_each_entry_by_its_group_rate()
    {
        // Adam's first step moves an entry by lr_group·|g|/(|g| + ε): compare every entry with its layer's rate.
        const float decay = 0.5f, lr = 1e-3f, eps = 1e-8f;
        using var model = new LlamaForCausalLM(Untied, seed: 3);
        var before = model.NamedParameters().ToDictionary(p => p.Path, p => p.Tensor.ToArray());
        var batch = TrainerTests.DigitBatch(0);
        using (TensorScope.Begin()) model.Loss(batch.Inputs, batch.Targets, batch.BatchSize, batch.Length).Backward();
        var grads = model.NamedParameters().ToDictionary(p => p.Path, p => p.Tensor.Grad?.ToArray());
        foreach (var (_, p) in model.NamedParameters()) p.ZeroGrad();
        using var trainer = FullFineTuneTrainer(model, new TrainerOptions { MaxSteps = 1, LearningRate = lr, LayerwiseLearningRateDecay = decay, MaxGradNorm = 0 });
        trainer.Train();
        double maxErr = 0;
        foreach (var (path, p) in model.NamedParameters())
        {
            float rate = lr * LayerwiseLearningRate.ScaleFor(path, 4, decay);
            var now = p.ToArray();
            var g = grads[path] ?? new float[now.Length];
            for (int i = 0; i < now.Length; i++)
            {
                double expected = rate * Math.Abs(g[i]) / (Math.Abs(g[i]) + eps);
                maxErr = Math.Max(maxErr, Math.Abs(Math.Abs(now[i] - before[path][i]) - expected) / rate);
            }
        }
        output.WriteLine($"max |Δw − lr·decay^(L−1−layer)·|g|/(|g|+ε)| / rate = {maxErr:E3}");
        Assert.True(maxErr < 2e-3, $"max |Δw − lr·decay^(L−1−layer)·|g|/(|g|+ε)| / rate = {maxErr:E3}");
    }

    [Fact]
    public void Composes_with_LoRA_and_LoRA_plus()
    {
        const float decay = 0.5f;
        using var peft = PeftModel.Create(new LlamaForCausalLM(Untied, seed: 3), new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear });
        using var trainer = FullFineTuneTrainer(peft.Model, new TrainerOptions { MaxSteps = 1, LoRAPlusRatio = 16, LayerwiseLearningRateDecay = decay });
        var scales = ScaleByPath(peft.Model, trainer.Optimizer);
        Assert.Equal(peft.Model.TrainableParameters().Count(), scales.Count);
        foreach (var (path, scale) in scales)
        {
            int layer = int.Parse(path.Split('.')[2]);
            float expected = (path.Contains(".lora_B.") ? 16f : 1f) * MathF.Pow(decay, 3 - layer);
            Assert.True(Math.Abs(scale - expected) <= 1e-6f * expected, $"{path}: scale {scale}, expected {expected}");
        }
        Assert.Equal(8, trainer.Optimizer.Groups.Count);                                     // 4 layers × (A, B)
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(-0.5f)]
    [InlineData(1.5f)]
    [InlineData(float.NaN)]
    public void Decay_outside_zero_to_one_is_a_clear_error(float decay)
    {
        var e = Assert.Throws<ArgumentException>(() => new TrainerOptions { LayerwiseLearningRateDecay = decay }.Validate());
        Assert.Contains("TrainerOptions.LayerwiseLearningRateDecay", e.Message);
        Assert.Contains("must be in (0, 1]", e.Message);
        e = Assert.Throws<ArgumentException>(() => LayerwiseLearningRate.Validate(decay));
        Assert.Contains("must be in (0, 1]", e.Message);
    }

    [Fact]
    public void Without_decoder_layers_decay_is_refused()
    {
        var p = Tensor.Zeros(2);
        p.RequiresGrad = true;
        var e = Assert.Throws<ArgumentException>(() => LayerwiseLearningRate.Groups([("head.weight", p)], 0, 0.9f));
        Assert.Contains("no parameter path contains 'layers.<i>.'", e.Message);
    }

    [Fact]
    public void Training_with_layerwise_decay_lowers_the_loss()
    {
        using var model = new LlamaForCausalLM(BottleneckAdapterTests.Tiny, seed: 3);
        using var trainer = FullFineTuneTrainer(model, new TrainerOptions { MaxSteps = 30, LearningRate = 3e-3f, MaxGradNorm = 1f, LayerwiseLearningRateDecay = 0.7f });
        var losses = trainer.Train().Losses;
        float first = losses.Take(3).Average(), last = losses.TakeLast(3).Average();
        output.WriteLine($"loss {first:F4} → {last:F4}");
        Assert.True(last < first - 0.3f, $"training with layer-wise decay should lower the loss: first 3 steps {first:F4}, last 3 {last:F4}");
    }
}
