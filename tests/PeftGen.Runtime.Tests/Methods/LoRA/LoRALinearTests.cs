using PeftGen.Autograd;
using PeftGen.Methods.LoRA;
using PeftGen.Nn;
using PeftGen.Tensors;
using PeftGen.Tests.Autograd;
using Xunit;

namespace PeftGen.Tests.Methods.LoRA;

public class LoRALinearTests
{
    private static LoRALinear Layer(LoRAConfig config, int inF = 12, int outF = 10, bool bias = false, int seed = 1)
    {
        var random = new Random(seed);
        var baseLayer = new Linear(inF, outF, bias, random);
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

    private static float MaxRelativeError(float[] a, float[] b)
    {
        float maxRef = a.Select(MathF.Abs).Max() + 1e-12f;
        return a.Zip(b, (x, y) => MathF.Abs(x - y)).Max() / maxRef;
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Fresh_adapter_is_a_no_op(bool rsLoRA, bool dora)
    {
        using var layer = Layer(new LoRAConfig { Rank = 4, Alpha = 8, UseRsLoRA = rsLoRA, UseDoRA = dora }, bias: true);
        using var x = Tensor.RandN([3, 5, 12], new Random(3));
        using var noGrad = GradMode.Disable();
        var expected = layer.BaseLayer.Forward(x).ToArray();
        var actual = layer.Forward(x).ToArray();
        float err = MaxRelativeError(expected, actual);
        Assert.True(dora ? err < 1e-6f : err == 0f, $"B = 0 must give the base output; max relative error {err:E3}");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Merged_and_unmerged_outputs_agree(bool rsLoRA, bool dora)
    {
        using var layer = Layer(new LoRAConfig { Rank = 4, Alpha = 8, UseRsLoRA = rsLoRA, UseDoRA = dora });
        Randomize(layer.LoraB("default"), 11);
        if (dora) Randomize(layer.Magnitude("default")!, 12, 2f);
        using var x = Tensor.RandN([4, 12], new Random(3));
        using var noGrad = GradMode.Disable();
        var before = layer.BaseLayer.EffectiveWeight().ToArray();
        var unmerged = layer.Forward(x).ToArray();
        layer.Merge();
        var merged = layer.Forward(x).ToArray();
        float err = MaxRelativeError(unmerged, merged);
        Assert.True(err < 1e-5f, $"merged vs unmerged: max relative error {err:E3}");
        layer.Unmerge();
        var restored = layer.BaseLayer.EffectiveWeight().ToArray();
        float werr = MaxRelativeError(before, restored);
        Assert.True(werr < 1e-6f, $"unmerge must restore the base weight; max relative error {werr:E3}");
        float again = MaxRelativeError(unmerged, layer.Forward(x).ToArray());
        Assert.True(again < 1e-5f, $"after unmerge: max relative error {again:E3}");
    }

    [Fact]
    public void Scaling_follows_alpha_over_r_or_sqrt_r()
    {
        Assert.Equal(2f, new LoRAConfig { Rank = 8, Alpha = 16 }.Scaling);
        Assert.Equal(16f / MathF.Sqrt(8), new LoRAConfig { Rank = 8, Alpha = 16, UseRsLoRA = true }.Scaling, 6);
        using var layer = Layer(new LoRAConfig { Rank = 4, Alpha = 8 });
        Randomize(layer.LoraB("default"), 5);
        using var noGrad = GradMode.Disable();
        using var x = Tensor.RandN([2, 12], new Random(2));
        var lora = Ops.Linear(Ops.Linear(x, layer.LoraA("default")), layer.LoraB("default")).ToArray();
        var baseOut = layer.BaseLayer.Forward(x).ToArray();
        var y = layer.Forward(x).ToArray();
        for (int i = 0; i < y.Length; i++) Assert.Equal(baseOut[i] + 2f * lora[i], y[i], 4);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Gradients_match_finite_differences(bool rsLoRA, bool dora)
    {
        using var layer = Layer(new LoRAConfig { Rank = 3, Alpha = 6, UseRsLoRA = rsLoRA, UseDoRA = dora }, inF: 6, outF: 5, bias: true);
        Randomize(layer.LoraB("default"), 21);
        var a = layer.LoraA("default");
        var b = layer.LoraB("default");
        var x = Tensor.RandN([2, 3, 6], new Random(4));
        x.RequiresGrad = true;
        var inputs = dora ? new[] { x, a, b, layer.Magnitude("default")! } : new[] { x, a, b };
        // DoRA treats ‖W0 + sBA‖ as a constant in backward (the paper's and PEFT's choice): hold it fixed for the check.
        if (dora) layer.FrozenDoRANorms = new();
        GradCheck.Assert(t => layer.Forward(t[0]), inputs, eps: 1e-3f);
        Assert.Null(((Linear)layer.BaseLayer).Weight.Grad); // the base stays frozen
    }

    [Fact]
    public void Dropout_applies_only_in_training_mode()
    {
        using var layer = Layer(new LoRAConfig { Rank = 4, Alpha = 8, Dropout = 0.5f });
        Randomize(layer.LoraB("default"), 5);
        using var x = Tensor.RandN([8, 12], new Random(2));
        using var noGrad = GradMode.Disable();
        layer.Eval();
        var e1 = layer.Forward(x).ToArray();
        var e2 = layer.Forward(x).ToArray();
        Assert.Equal(e1, e2);
        layer.Train();
        var t1 = layer.Forward(x).ToArray();
        Assert.NotEqual(e1, t1);
    }

    [Fact]
    public void Trainable_parameter_count_is_r_times_in_plus_out()
    {
        using var layer = Layer(new LoRAConfig { Rank = 4, Alpha = 8 }, inF: 12, outF: 10);
        Assert.Equal(4 * (12 + 10), layer.CountParameters().Trainable);
        using var dora = Layer(new LoRAConfig { Rank = 4, Alpha = 8, UseDoRA = true }, inF: 12, outF: 10);
        Assert.Equal(4 * (12 + 10) + 10, dora.CountParameters().Trainable);
    }
}
