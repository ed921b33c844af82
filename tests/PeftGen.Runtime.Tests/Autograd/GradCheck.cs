using PeftGen.Autograd;
using PeftGen.Tensors;

namespace PeftGen.Tests.Autograd;

/// <summary>
/// Finite-difference gradient checking: compares the tape's gradients of L = Σ f(inputs) ∘ R (R fixed random)
/// with central differences (L(x + ε) − L(x − ε)) / 2ε, element by element.
/// </summary>
internal static class GradCheck
{
    /// <summary>Asserts analytic and numeric gradients agree; reports the largest error.</summary>
    public static void Assert(Func<Tensor[], Tensor> f, Tensor[] inputs, float eps = 1e-2f, float tolerance = 2e-2f, int seed = 7)
    {
        using var scope = TensorScope.Begin();
        var random = new Random(seed);
        float[] weights;
        {
            var y = f(inputs);
            weights = Enumerable.Range(0, (int)y.Count).Select(_ => (float)random.NextGaussian()).ToArray();
            var r = Tensor.FromArray(weights, y.ShapeArray.ToArray());
            Ops.Sum(Ops.Mul(y, r)).Backward();
        }
        for (int n = 0; n < inputs.Length; n++)
        {
            var input = inputs[n];
            if (!input.RequiresGrad) continue;
            Xunit.Assert.True(input.Grad != null, $"input {n} ({input.DescribeForError()}) received no gradient");
            var analytic = input.Grad!.ToArray();
            var data = input.AsSpan();
            double maxErr = 0, maxRef = 1e-3;
            int worst = -1;
            for (int i = 0; i < data.Length; i++)
            {
                float saved = data[i];
                data[i] = saved + eps;
                double plus = Loss(f, inputs, weights);
                data = input.AsSpan();
                data[i] = saved - eps;
                double minus = Loss(f, inputs, weights);
                data = input.AsSpan();
                data[i] = saved;
                double numeric = (plus - minus) / (2 * eps);
                double err = Math.Abs(numeric - analytic[i]);
                maxRef = Math.Max(maxRef, Math.Abs(numeric));
                if (err > maxErr)
                {
                    maxErr = err;
                    worst = i;
                }
            }
            double relative = maxErr / maxRef;
            Xunit.Assert.True(relative < tolerance,
                $"input {n} {input.DescribeForError()}: max |analytic − numeric| = {maxErr:E3} at element {worst} (relative {relative:E3}, tolerance {tolerance:E1})");
            input.ZeroGrad();
        }
    }

    private static double Loss(Func<Tensor[], Tensor> f, Tensor[] inputs, float[] weights)
    {
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        var y = f(inputs).ToArray();
        double total = 0;
        for (int i = 0; i < y.Length; i++) total += (double)y[i] * weights[i];
        return total;
    }

    /// <summary>A leaf tensor of N(0, scale²) values that requires gradients.</summary>
    public static Tensor Param(Random random, float scale, params int[] shape)
    {
        var t = Tensor.RandN(shape, random, scale);
        t.RequiresGrad = true;
        return t;
    }
}
