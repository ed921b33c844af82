using PeftGen.Optim;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Training;

public class OptimizerTests
{
    [Fact]
    public void AdamW_matches_the_closed_form_of_torch_optim_AdamW()
    {
        float[] p0 = [0.5f, -1.5f, 2f];
        float[][] grads = [[0.1f, -0.2f, 0.3f], [0.05f, 0.4f, -0.1f], [-0.3f, 0.1f, 0.2f]];
        const float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
        var p = Tensor.FromArray(p0, 3);
        p.RequiresGrad = true;
        using var opt = new AdamW([p], lr, b1, b2, eps, wd);
        double[] expected = p0.Select(x => (double)x).ToArray();
        double[] m = new double[3], v = new double[3];
        for (int t = 1; t <= grads.Length; t++)
        {
            p.ZeroGrad();
            SetGrad(p, grads[t - 1]);
            opt.Step();
            for (int i = 0; i < 3; i++)
            {
                expected[i] *= 1 - lr * wd;
                m[i] = b1 * m[i] + (1 - b1) * grads[t - 1][i];
                v[i] = b2 * v[i] + (1 - b2) * grads[t - 1][i] * grads[t - 1][i];
                double mHat = m[i] / (1 - Math.Pow(b1, t)), vHat = v[i] / (1 - Math.Pow(b2, t));
                expected[i] -= lr * mHat / (Math.Sqrt(vHat) + eps);
            }
        }
        var actual = p.ToArray();
        double maxErr = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
        Assert.True(maxErr < 1e-6, $"max |AdamW − closed form| = {maxErr:E3}");
    }

    private static void SetGrad(Tensor p, float[] values)
    {
        // A backward pass of Σ p ∘ values leaves exactly `values` in p.Grad.
        using var scope = TensorScope.Begin();
        Ops.Sum(Ops.Mul(p, Tensor.FromArray(values, values.Length))).Backward();
    }

    [Fact]
    public void Frozen_parameters_are_refused()
    {
        var p = Tensor.Zeros(2);
        var e = Assert.Throws<ArgumentException>(() => new AdamW([p]));
        Assert.Contains("does not require gradients", e.Message);
    }

    [Fact]
    public void Clipping_scales_to_the_max_norm_and_reports_the_original()
    {
        var a = Tensor.Zeros(2);
        var b = Tensor.Zeros(1);
        a.RequiresGrad = b.RequiresGrad = true;
        SetGrad(a, [3f, 0f]);
        SetGrad(b, [4f]);
        float norm = GradientClipping.ClipGlobalNorm([a, b], 1f);
        Assert.Equal(5f, norm, 4);
        var clipped = a.Grad!.ToArray().Concat(b.Grad!.ToArray()).ToArray();
        Assert.Equal(1f, MathF.Sqrt(clipped.Sum(x => x * x)), 4);
        Assert.Equal(0.6f, clipped[0], 4);
    }

    [Fact]
    public void Schedules_warm_up_then_decay()
    {
        var cosine = LearningRateSchedule.Cosine(1f, warmupSteps: 10, totalSteps: 110);
        Assert.Equal(0.1f, cosine.At(0), 5);
        Assert.Equal(1f, cosine.At(9), 5);
        Assert.Equal(1f, cosine.At(10), 5);
        Assert.Equal(0.5f, cosine.At(60), 5);
        Assert.Equal(0f, cosine.At(110), 5);
        var linear = LearningRateSchedule.Linear(2f, 0, 100);
        Assert.Equal(1f, linear.At(50), 5);
        Assert.Equal(3f, LearningRateSchedule.Constant(3f, 5).At(1000), 5);
        Assert.Throws<ArgumentOutOfRangeException>(() => LearningRateSchedule.Cosine(1f, 20, 10));
    }
}
