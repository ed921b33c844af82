using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.Methods.LoRA;
using PeftGen.Methods;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using PeftGen.Training;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Methods.LoRA;

public class LoRAFATests(ITestOutputHelper output)
{
    private static LoRALinear Layer(LoRAConfig config, int inF = 12, int outF = 10, bool bias = false, int seed = 1)
    {
        var baseLayer = new Linear(inF, outF, bias, new Random(seed));
        baseLayer.Freeze();
        var layer = new LoRALinear(baseLayer, new Rng(7));
        layer.AddAdapter("default", config.Rank, config.Alpha, config, new Rng((ulong)seed));
        return layer;
    }

    private static void Randomize(Tensor t, int seed, float scale = 0.5f)
    {
        var r = new Random(seed);
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = (float)(r.NextGaussian() * scale);
    }

    [Fact]
    public void LoRAFA_output_matches_the_closed_form()
    {
        var config = new LoRAConfig { Rank = 4, Alpha = 6, UseLoRAFA = true };
        using var layer = Layer(config, bias: true);
        Randomize(layer.LoraB("default"), 3);
        using var scope = TensorScope.Begin();
        var x = Tensor.RandN([2, 3, 12], new Random(4));
        using var noGrad = GradMode.Disable();
        var y = layer.Forward(x).ToArray();
        var xs = x.ToArray();
        var a = layer.LoraA("default").ToArray();
        var b = layer.LoraB("default").ToArray();
        var w = ((Linear)layer.BaseLayer).Weight.ToArray();
        var bias = layer.Bias!.ToArray();
        double s = 6.0 / 4, maxErr = 0;
        for (int row = 0; row < 6; row++)
            for (int o = 0; o < 10; o++)
            {
                double expected = bias[o];
                for (int i = 0; i < 12; i++) expected += (double)xs[row * 12 + i] * w[o * 12 + i];
                for (int k = 0; k < 4; k++)
                {
                    double u = 0;
                    for (int i = 0; i < 12; i++) u += (double)xs[row * 12 + i] * a[k * 12 + i];
                    expected += s * b[o * 4 + k] * u;                                            // s·B·(A·x)
                }
                maxErr = Math.Max(maxErr, Math.Abs(expected - y[row * 10 + o]));
            }
        Assert.True(maxErr < 1e-5, $"LoRA-FA output vs x·W0ᵀ + b + s·B·A·x: max error {maxErr:E3}");
    }

    [Fact]
    public void LoRAFA_gradients_match_finite_differences_and_A_stays_frozen()
    {
        using var layer = Layer(new LoRAConfig { Rank = 3, Alpha = 6, UseLoRAFA = true }, inF: 6, outF: 5, bias: true);
        Randomize(layer.LoraB("default"), 21);
        var a = layer.LoraA("default");
        var b = layer.LoraB("default");
        Assert.False(a.RequiresGrad);
        var x = Tensor.RandN([2, 3, 6], new Random(4));
        x.RequiresGrad = true;
        GradCheck.Assert(t => layer.Forward(t[0]), [x, b], eps: 1e-3f);
        Assert.Null(a.Grad);
        Assert.Null(((Linear)layer.BaseLayer).Weight.Grad);
    }

    [Fact]
    public void LoRAFA_gradient_correction_follows_the_formula()
    {
        float[] GradB(bool correct)
        {
            using var layer = Layer(new LoRAConfig { Rank = 3, Alpha = 6, UseLoRAFA = true, LoRAFAGradientCorrection = correct }, inF: 7, outF: 5);
            Randomize(layer.LoraB("default"), 21);
            using (TensorScope.Begin())
            {
                var x = Tensor.RandN([4, 7], new Random(4));
                var r = Tensor.RandN([4, 5], new Random(5));
                Ops.Sum(Ops.Mul(layer.Forward(x), r)).Backward();
            }
            return layer.LoraB("default").Grad!.ToArray();
        }
        var plain = GradB(false);                                   // checked against finite differences above
        var corrected = GradB(true);
        using var reference = Layer(new LoRAConfig { Rank = 3, Alpha = 6, UseLoRAFA = true }, inF: 7, outF: 5);
        var a = reference.LoraA("default").ToArray();              // same seed, same A
        double s = 2.0, maxErr = 0, maxRef = 0;
        // corrected = (1/s²)·plain·(A·Aᵀ + εI)⁻¹  ⇔  s²·corrected·(A·Aᵀ + εI) = plain
        for (int o = 0; o < 5; o++)
            for (int j = 0; j < 3; j++)
            {
                double back = 0;
                for (int k = 0; k < 3; k++)
                {
                    double aat = k == j ? LoRAFA.CorrectionEpsilon : 0;
                    for (int i = 0; i < 7; i++) aat += (double)a[k * 7 + i] * a[j * 7 + i];
                    back += s * s * corrected[o * 3 + k] * aat;
                }
                maxErr = Math.Max(maxErr, Math.Abs(back - plain[o * 3 + j]));
                maxRef = Math.Max(maxRef, Math.Abs(plain[o * 3 + j]));
            }
        Assert.True(maxErr / maxRef < 1e-4, $"s²·g_corrected·(A·Aᵀ + εI) vs g_B: max relative error {maxErr / maxRef:E3}");
    }

    [Fact]
    public void LoRAFA_keeps_less_activation_memory_for_backward_than_LoRA()
    {
        const int inF = 256, outF = 256, rank = 8, rows = 4 * 32;
        // What backward reads is measured by poisoning: after the forward pass x is overwritten with NaN. Plain
        // LoRA's dA = (g·B)ᵀ·x reads it (gradients turn NaN); LoRA-FA's backward must not (gradients unchanged).
        (float[] GradB, float[] GradX, bool GradANaN) Run(bool loraFA, bool poison)
        {
            using var layer = Layer(new LoRAConfig { Rank = rank, Alpha = 16, UseLoRAFA = loraFA }, inF, outF);
            Randomize(layer.LoraB("default"), 9, 0.05f);
            using var scope = TensorScope.Begin();
            var x = Tensor.RandN([4, 32, inF], new Random(3));
            x.RequiresGrad = true;
            var y = layer.Forward(x);
            if (poison) x.AsSpan().Fill(float.NaN);
            Ops.Sum(Ops.Mul(y, Tensor.RandN([4, 32, outF], new Random(5)))).Backward();
            var ga = layer.LoraA("default").Grad;
            return (layer.LoraB("default").Grad!.ToArray(), x.Grad!.ToArray(), ga != null && ga.ToArray().Any(float.IsNaN));
        }
        var loraPoisoned = Run(false, true);
        Assert.True(loraPoisoned.GradANaN, "plain LoRA's dA must read x (poisoned x should give NaN in dA)");
        var faClean = Run(true, false);
        var faPoisoned = Run(true, true);
        Assert.Equal(faClean.GradB, faPoisoned.GradB);
        Assert.Equal(faClean.GradX, faPoisoned.GradX);

        long lora = rows * LoRAFA.BytesKeptPerRow(inF, rank, loraFA: false);
        long fa = rows * LoRAFA.BytesKeptPerRow(inF, rank, loraFA: true);
        output.WriteLine($"adapter path of one [{outF}, {inF}] layer, r = {rank}, {rows} rows: LoRA keeps x + x·Aᵀ = {lora:N0} bytes, " +
                         $"LoRA-FA keeps x·Aᵀ = {fa:N0} bytes (saves {lora - fa:N0} bytes, {(double)lora / fa:F1}x less)");
        Assert.True(lora - fa == rows * inF * sizeof(float), $"saving {lora - fa} bytes should be x's {rows * inF * sizeof(float)} bytes");
    }

    [Fact]
    public void LoRAFA_trains_only_B_and_counts_r_times_out_per_layer()
    {
        using var peft = PeftModel.Create(new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1), new LoRAConfig { Rank = 4, Targets = TargetModules.AllLinear, UseLoRAFA = true });
        peft.SetAdapter("default");
        long expected = peft.LoRALayers.Sum(l => 4L * l.Layer.OutFeatures);
        Assert.Equal(expected, peft.Model.CountParameters().Trainable);
        Assert.Equal(expected, peft.Plan().Sum(p => p.TrainableParameters));
        Assert.All(peft.Model.NamedParameters().Where(p => p.Tensor.RequiresGrad), p => Assert.EndsWith(".lora_B.default.weight", p.Path));
    }

    [Fact]
    public void LoRAFA_invalid_combinations_are_errors()
    {
        using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
        var dora = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, new LoRAConfig { UseLoRAFA = true, UseDoRA = true }));
        Assert.Contains("LoRA-FA cannot be combined with DoRA", dora.Message);
        var correction = Assert.Throws<ArgumentException>(() => PeftModel.Create(model, new LoRAConfig { LoRAFAGradientCorrection = true }));
        Assert.Contains("needs UseLoRAFA", correction.Message);
    }

    [Fact]
    public void LoRAFA_lowers_the_loss_on_a_tiny_llama_and_saves_as_plain_LoRA()
    {
        using var model = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
        using var peft = PeftModel.Create(model, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear, UseLoRAFA = true, Seed = 2 });
        var batch = FixedBatch();
        using var trainer = new Trainer(peft, BatchSource.FromFunction(_ => batch),
            new TrainerOptions { MaxSteps = 25, LearningRate = 1e-2f, Schedule = "constant", MaxGradNorm = 1f });
        var losses = trainer.Train().Losses;
        Assert.True(losses[^1] < 0.7f * losses[0], $"LoRA-FA loss went from {losses[0]:F4} to {losses[^1]:F4}; expected a drop of more than 30%");
        Console.WriteLine($"{nameof(LoRAFATests)} loss {losses[0]:F4} -> {losses[^1]:F4}");

        var folder = Path.Combine(Path.GetTempPath(), "peftgen-lorafa-" + Guid.NewGuid().ToString("N"));
        try
        {
            PeftAdapterFile.Save(peft, folder);
            using var fresh = new LlamaForCausalLM(PeftModelTests.Tiny, seed: 1);
            using var loaded = PeftAdapterFile.LoadInto(fresh, folder);
            float diff = Logits(model, batch).Zip(Logits(fresh, batch), (p, q) => MathF.Abs(p - q)).Max();
            Assert.True(diff < 1e-5f, $"reloaded LoRA-FA adapter changes logits by {diff:E3}");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    internal static Batch FixedBatch()
    {
        int[] inputs = [1, 5, 7, 3, 9, 2, 4, 8, 6, 0, 11, 13, 12, 10, 14, 15];
        int[] targets = inputs.Skip(1).Append(1).ToArray();
        return new Batch(inputs, targets, 2, 8);
    }

    internal static float[] Logits(LlamaForCausalLM model, Batch batch)
    {
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        model.Eval();
        try
        {
            return model.Forward(batch.Inputs, batch.BatchSize, batch.Length).ToArray();
        }
        finally
        {
            model.Train();
        }
    }

    /// <summary>
    /// One forward + backward of a QLoRA Llama (NF4 base, adapters on all seven projections): the peak of host tensor
    /// memory on this thread and the B gradients.
    /// </summary>
    private static (long Peak, float[][] Grads, float Loss) TrainingStepMemory(bool loraFA, bool keepActivations)
    {
        var config = new LlamaConfig
        {
            VocabSize = 64, HiddenSize = 64, IntermediateSize = 192, NumHiddenLayers = 2, NumAttentionHeads = 4,
            NumKeyValueHeads = 2, MaxPositionEmbeddings = 64, TieWordEmbeddings = true,
        };
        using var model = new LlamaForCausalLM(config, seed: 3);
        var peft = PeftModel.Create(model, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear, UseLoRAFA = loraFA },
            new QuantizationConfig(global::PeftGen.Quantization.QuantType.NF4, DoubleQuant: true, BlockSize: 64));
        foreach (var (_, layer) in peft.LoRALayers) Randomize(layer.LoraB("default"), 5, 0.05f);
        var random = new Random(9);
        int batch = 4, time = 48;
        var inputs = Enumerable.Range(0, batch * time).Select(_ => random.Next(64)).ToArray();
        var targets = Enumerable.Range(0, batch * time).Select(_ => random.Next(64)).ToArray();
        LlamaDecoderLayer.t_keepActivations = keepActivations;
        try
        {
            float loss;
            using (TensorScope.Begin())
            {
                HostMemoryStats.ResetPeak();
                long before = HostMemoryStats.Live;
                var l = model.Loss(inputs, targets, batch, time);
                loss = l.Item();
                l.Backward();
                long peak = HostMemoryStats.Peak - before;
                var grads = peft.LoRALayers.Select(x => x.Layer.LoraB("default").Grad!.ToArray()).ToArray();
                return (peak, grads, loss);
            }
        }
        finally
        {
            LlamaDecoderLayer.t_keepActivations = false;
        }
    }

    [Fact]
    public void LoRAFA_on_a_4bit_base_drops_the_activations_nothing_reads_and_lowers_the_peak()
    {
        var kept = TrainingStepMemory(loraFA: true, keepActivations: true);
        var dropped = TrainingStepMemory(loraFA: true, keepActivations: false);
        var lora = TrainingStepMemory(loraFA: false, keepActivations: false);
        // Per layer: the attention norm's output and the MLP norm's output [b, t, hidden] and SwiGLU's output [b, t, intermediate].
        long expected = 2L * (2 * 4 * 48 * 64 + 4 * 48 * 192) * sizeof(float);
        output.WriteLine($"peak host tensor memory of one step: LoRA {lora.Peak:N0} B, LoRA-FA keeping everything {kept.Peak:N0} B, LoRA-FA {dropped.Peak:N0} B; saved {kept.Peak - dropped.Peak:N0} B (activations nothing reads: {expected:N0} B)");
        Assert.Equal(kept.Loss, dropped.Loss);
        for (int i = 0; i < kept.Grads.Length; i++) Assert.Equal(kept.Grads[i], dropped.Grads[i]);
        Assert.True(kept.Peak - dropped.Peak >= expected * 9 / 10, $"LoRA-FA saved {kept.Peak - dropped.Peak:N0} B of the {expected:N0} B nothing reads");
        Assert.True(dropped.Peak < lora.Peak, $"LoRA-FA peak {dropped.Peak:N0} B is not below LoRA's {lora.Peak:N0} B");
        // Plain LoRA reads x for dA, so its activations stay.
        Assert.Equal(lora.Peak, TrainingStepMemory(loraFA: false, keepActivations: true).Peak);
    }
}
