using PeftGen.Autograd;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Autograd;

/// <summary>Every differentiable op against finite differences.</summary>
public class OpGradientTests
{
    private readonly Random _random = new(1234);

    private Tensor P(params int[] shape) => GradCheck.Param(_random, 1f, shape);

    [Fact]
    public void Linear_with_bias() =>
        GradCheck.Assert(t => Ops.Linear(t[0], t[1], t[2]), [P(2, 3, 5), P(4, 5), P(4)]);

    [Fact]
    public void Linear_frozen_weight_gives_input_gradient_only()
    {
        var w = Tensor.RandN([4, 5], _random);
        GradCheck.Assert(t => Ops.Linear(t[0], w), [P(3, 5)]);
        Assert.Null(w.Grad);
    }

    [Fact]
    public void MatMul_batched() => GradCheck.Assert(t => Ops.MatMul(t[0], t[1]), [P(2, 3, 4), P(2, 4, 5)]);

    [Fact]
    public void MatMul_shared_right_operand() => GradCheck.Assert(t => Ops.MatMul(t[0], t[1]), [P(2, 3, 4), P(4, 5)]);

    [Fact]
    public void MatMul_reads_transposed_views() =>
        GradCheck.Assert(t => Ops.MatMul(t[0].Transpose(-1, -2), t[1].Transpose(-1, -2)), [P(2, 4, 3), P(2, 5, 4)]);

    [Fact]
    public void Add_same_shape_and_broadcast_bias()
    {
        GradCheck.Assert(t => Ops.Add(t[0], t[1], 2f, -0.5f), [P(3, 4), P(3, 4)]);
        GradCheck.Assert(t => Ops.Add(t[0], t[1]), [P(2, 3, 4), P(4)]);
    }

    [Fact]
    public void Mul_and_scale() => GradCheck.Assert(t => Ops.Scale(Ops.Mul(t[0], t[1]), 1.5f), [P(3, 4), P(3, 4)]);

    [Fact]
    public void Reshape_transpose_permute_contiguous() =>
        GradCheck.Assert(t => t[0].Reshape(2, 6, 2).Permute(2, 0, 1).Transpose(0, 2).Contiguous().Reshape(-1), [P(4, 6)]);

    [Fact]
    public void Slice_and_concat() =>
        GradCheck.Assert(t => Ops.Concat([t[0].Slice(1, 1, 2), t[1], t[0].Slice(1, 0, 1)], 1), [P(2, 4, 3), P(2, 2, 3)]);

    [Fact]
    public void Embedding_scatters_repeated_ids()
    {
        int[] ids = [3, 1, 3, 0, 2, 3];
        GradCheck.Assert(t => Ops.Embedding(t[0], ids, 2, 3), [P(5, 4)]);
    }

    [Fact]
    public void RmsNorm() => GradCheck.Assert(t => Ops.RmsNorm(t[0], t[1], 1e-5f), [P(3, 7), P(7)], eps: 1e-3f);

    [Fact]
    public void Silu_and_swiglu()
    {
        GradCheck.Assert(t => Ops.Silu(t[0]), [P(3, 5)]);
        GradCheck.Assert(t => Ops.SwiGlu(t[0], t[1]), [P(3, 5), P(3, 5)]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Rope_both_conventions(bool interleaved) =>
        GradCheck.Assert(t => Ops.Rope(t[0], 3, 10000f, interleaved), [P(2, 3, 2, 8)]);

    [Theory]
    [InlineData(4, 4)]
    [InlineData(4, 2)]
    [InlineData(4, 1)]
    public void Causal_attention_with_grouped_query_heads(int heads, int kvHeads) =>
        GradCheck.Assert(t => Ops.CausalAttention(t[0], t[1], t[2]), [P(2, 5, heads, 8), P(2, 5, kvHeads, 8), P(2, 5, kvHeads, 8)], eps: 1e-3f);

    [Fact]
    public void Softmax() => GradCheck.Assert(t => Ops.Softmax(t[0]), [P(3, 6)], eps: 1e-3f);

    [Fact]
    public void Cross_entropy_skips_ignored_targets()
    {
        int[] targets = [2, -100, 0, 4];
        GradCheck.Assert(t => Ops.CrossEntropy(t[0], targets), [P(4, 5)], eps: 1e-3f);
    }

    [Fact]
    public void Linear_cross_entropy_differentiates_input_and_weight()
    {
        int[] targets = [2, -100, 0, 6];
        GradCheck.Assert(t => Ops.LinearCrossEntropy(t[0], t[1], targets), [P(4, 5), P(7, 5)], eps: 1e-3f);
    }

    [Theory]
    [InlineData(DType.Float32, true)]
    [InlineData(DType.Float32, false)]
    [InlineData(DType.BFloat16, false)]
    public void Linear_cross_entropy_equals_cross_entropy_of_the_linear(DType weightType, bool trainableHead)
    {
        // The fused op against the two ops it replaces: loss, dx and (a trainable head) dW, under an upstream gradient of 0.5.
        // A frozen head takes the backend's fused kernel, a trainable one the materialised logits.
        int n = 37, hidden = 24, vocab = 301;
        var targets = Enumerable.Range(0, n).Select(i => i % 5 == 0 ? -100 : _random.Next(vocab)).ToArray();
        using var scope = TensorScope.Begin();
        var wide = Tensor.RandN([vocab, hidden], _random, 0.3f);
        var weight = weightType == DType.Float32 ? wide : wide.To(weightType);
        weight.RequiresGrad = trainableHead;
        var x = Tensor.RandN([n, hidden], _random);
        x.RequiresGrad = true;

        Ops.Scale(Ops.CrossEntropy(Ops.Linear(x, weight), targets), 0.5f).Backward();
        float expectedLoss = Ops.CrossEntropy(Ops.Linear(x, weight), targets).Item();
        var expectedDx = x.Grad!.ToArray();
        var expectedDw = weight.Grad?.ToArray();
        x.ZeroGrad();
        weight.ZeroGrad();

        var loss = Ops.LinearCrossEntropy(x, weight, targets);
        float fusedLoss = loss.Item();
        Ops.Scale(loss, 0.5f).Backward();
        Assert.True(Math.Abs(fusedLoss - expectedLoss) < 1e-5f * Math.Max(1f, expectedLoss), $"loss {fusedLoss} vs {expectedLoss}");
        AssertClose(expectedDx, x.Grad!.ToArray(), "dx");
        if (expectedDw != null) AssertClose(expectedDw, weight.Grad!.ToArray(), "dW");
        else Assert.Null(weight.Grad);

        using (GradMode.Disable())
            Assert.Equal(fusedLoss, Ops.LinearCrossEntropy(x, weight, targets).Item());

        static void AssertClose(float[] expected, float[] actual, string what)
        {
            double worst = 0, scale = 1e-6;
            for (int i = 0; i < expected.Length; i++)
            {
                worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
                scale = Math.Max(scale, Math.Abs(expected[i]));
            }
            Assert.True(worst <= 1e-5 * scale, $"{what}: max |fused − unfused| = {worst:E3} (largest value {scale:E3})");
        }
    }

    [Fact]
    public void Dropout_is_seeded_and_differentiable()
    {
        GradCheck.Assert(t => Ops.Dropout(t[0], 0.3f, new Rng(5)), [P(4, 8)]);
        using var x = Tensor.Full([1000], 1f);
        var a = Ops.Dropout(x, 0.25f, new Rng(9)).ToArray();
        var b = Ops.Dropout(x, 0.25f, new Rng(9)).ToArray();
        Assert.Equal(a, b);
        int dropped = a.Count(v => v == 0f);
        Assert.InRange(dropped, 200, 300);
        Assert.All(a, v => Assert.True(v == 0f || Math.Abs(v - 1f / 0.75f) < 1e-6f, $"survivor {v} not scaled by 1/(1-p)"));
    }

    [Fact]
    public void Sum_and_mean()
    {
        GradCheck.Assert(t => Ops.Sum(t[0]), [P(3, 4)]);
        GradCheck.Assert(t => Ops.Mean(t[0]), [P(3, 4)]);
    }

    [Fact]
    public void Gradients_accumulate_across_backward_passes()
    {
        var w = P(3, 4);
        using var x = Tensor.RandN([2, 4], _random);
        using (TensorScope.Begin()) Ops.Sum(Ops.Linear(x, w)).Backward();
        var once = w.Grad!.ToArray();
        using (TensorScope.Begin()) Ops.Sum(Ops.Linear(x, w)).Backward();
        var twice = w.Grad!.ToArray();
        for (int i = 0; i < once.Length; i++) Assert.Equal(2 * once[i], twice[i], 5);
    }

    [Fact]
    public void No_grad_scope_records_nothing()
    {
        var w = P(3, 4);
        using var x = Tensor.RandN([2, 4], _random);
        using (PeftGen.Autograd.GradMode.Disable())
        {
            var y = Ops.Linear(x, w);
            Assert.False(y.RequiresGrad);
        }
    }
}
