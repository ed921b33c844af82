using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.Methods.DeltaLoRA;
using PeftGen.Methods.IA3;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.VeRA;
using PeftGen.Methods;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Tensors;
using PeftGen.Training;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Nn;

/// <summary>
/// Frozen weights stored in 16 bits (bf16, fp16): the linear layer, the embedding, a whole Llama and the adapters on such a
/// base compute what float32 computes on the same values widened.
/// </summary>
public class Float16WeightTests(ITestOutputHelper output)
{
    private static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 48, IntermediateSize = 80, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = 24, MaxPositionEmbeddings = 32, TieWordEmbeddings = false,
    };

    private static readonly int[] Ids = [1, 5, 7, 3, 9, 2, 4, 8, 11, 23, 0, 17];

    /// <summary>max |actual − expected| / max |expected|, and where the largest error is.</summary>
    private static (double Error, int At) RelativeError(float[] actual, float[] expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double err = 0, scale = 1e-30;
        int at = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double e = Math.Abs((double)actual[i] - expected[i]);
            if (e > err) (err, at) = (e, i);
            scale = Math.Max(scale, Math.Abs(expected[i]));
        }
        return (err / scale, at);
    }

    private static void AssertClose(float[] actual, float[] expected, double tolerance, string what)
    {
        var (error, at) = RelativeError(actual, expected);
        Assert.True(error <= tolerance,
            $"{what}: largest relative error {error:E3} at {at} ({actual[at]} vs {expected[at]}), tolerance {tolerance:E1}");
    }

    /// <summary>Freezes every matrix parameter (linear weights, embedding, output head) and stores it as <paramref name="dtype"/>.</summary>
    private static void ConvertMatrices(Module model, DType dtype)
    {
        foreach (var (_, t) in model.NamedParameters())
            if (t.Rank == 2)
            {
                t.RequiresGrad = false;
                t.ConvertInPlace(dtype);
            }
    }

    /// <summary>The reference: a float32 model whose matrices hold exactly the 16-bit values (rounded, then widened back).</summary>
    private static LlamaForCausalLM RoundedFloatModel(LlamaConfig config, DType dtype)
    {
        var model = new LlamaForCausalLM(config, seed: 1);
        ConvertMatrices(model, dtype);
        ConvertMatrices(model, DType.Float32);
        return model;
    }

    private static LlamaForCausalLM SixteenBitModel(LlamaConfig config, DType dtype)
    {
        var model = new LlamaForCausalLM(config, seed: 1);
        ConvertMatrices(model, dtype);
        return model;
    }

    private static float[] Logits(LlamaForCausalLM model)
    {
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        return model.Forward(Ids, 2, 6).ToArray();
    }

    private static ushort[] Bits(Tensor t) => t.RawDataSpan().ToArray().Chunk(2).Select(b => BitConverter.ToUInt16(b)).ToArray();

    // ---- Linear --------------------------------------------------------------------------------------------

    [Theory]
    [InlineData(DType.BFloat16, 24, 100, 6)]
    [InlineData(DType.Float16, 33, 7, 1)]          // one row: the GEMVs; odd sizes
    [InlineData(DType.BFloat16, 45, 77, 1)]
    [InlineData(DType.Float16, 70, 2100, 1)]       // one row wider than a GEMV slice (2048)
    [InlineData(DType.BFloat16, 1100, 1000, 5)]    // 4 tiles deep (forward), 5 (input gradient)
    [InlineData(DType.Float16, 300, 2000, 7)]      // 8 tiles deep (forward)
    [InlineData(DType.BFloat16, 4500, 300, 3)]     // forward: 2 tiles across the outputs
    [InlineData(DType.Float16, 500, 4500, 2)]      // input gradient: 2 tiles across the inputs, 2 deep
    [InlineData(DType.BFloat16, 97, 53, 300)]      // many rows
    [InlineData(DType.Float16, 31, 33, 2)]
    public void Forward_and_input_gradient_equal_the_float_linear_on_the_widened_weight(DType dtype, int outF, int inF, int rows)
    {
        using var scope = TensorScope.Begin();
        var random = new Random(outF * 7 + inF + rows);
        var w16 = Tensor.RandN([outF, inF], random, 0.1f).To(dtype);                         // [out, in] 16-bit
        var w32 = w16.To(DType.Float32);                                                    // [out, in] the same values
        var x0 = Tensor.RandN([rows, inF], random).ToArray();
        var b0 = Tensor.RandN([outF], random).ToArray();
        var g = Tensor.RandN([rows, outF], random);                                          // upstream gradient

        (float[] Y, float[] Dx, float[] Db) Run(Tensor weight)
        {
            var x = Tensor.FromArray(x0, rows, inF);
            x.RequiresGrad = true;
            var bias = Tensor.FromArray(b0, outF);
            bias.RequiresGrad = true;
            var y = Ops.Linear(x, weight, bias);                                             // [rows, out]
            Assert.Equal(DType.Float32, y.DType);
            // x is used twice, so the second backward adds into its gradient.
            Ops.Sum(Ops.Mul(Ops.Add(y, Ops.Linear(x, weight)), g)).Backward();
            return (y.ToArray(), x.Grad!.ToArray(), bias.Grad!.ToArray());
        }

        var reference = Run(w32);
        var actual = Run(w16);
        Assert.Null(w16.Grad);
        var (fwd, _) = RelativeError(actual.Y, reference.Y);
        var (bwd, _) = RelativeError(actual.Dx, reference.Dx);
        output.WriteLine($"{dtype} [{outF}, {inF}], {rows} rows: relative error y {fwd:E2}, dx {bwd:E2}");
        AssertClose(actual.Y, reference.Y, 1e-5, $"{dtype} y");
        AssertClose(actual.Dx, reference.Dx, 1e-5, $"{dtype} dx (accumulated over two uses)");
        AssertClose(actual.Db, reference.Db, 1e-5, $"{dtype} dbias");
    }

    [Fact]
    public void A_16bit_weight_needs_float32_inputs_and_biases_and_a_dense_layout()
    {
        using var scope = TensorScope.Begin();
        var w = Tensor.RandN([8, 16], new Random(1)).To(DType.BFloat16);
        var x = Tensor.RandN([3, 16], new Random(2));
        var e = Assert.Throws<ArgumentException>(() => Ops.Linear(x.To(DType.Float16), w));
        output.WriteLine(e.Message);
        Assert.Contains("Float16", e.Message);
        Assert.Contains("float32", e.Message);
        e = Assert.Throws<ArgumentException>(() => Ops.Linear(x, w, Tensor.Zeros([8], DType.BFloat16)));
        Assert.Contains("bias", e.Message);
        e = Assert.Throws<ArgumentException>(() => Ops.Linear(x, Tensor.Zeros([16, 16], DType.BFloat16).Slice(1, 0, 8).Transpose(0, 1)));
        Assert.Contains("strided", e.Message);
        Assert.Throws<ArgumentException>(() => Ops.Linear(Tensor.Zeros(3, 15), w));
        Assert.Throws<InvalidOperationException>(() => w.RequiresGrad = true);
    }

    [Fact]
    public void FromWeight_owns_a_16bit_weight_frozen_and_a_float_one_trainable()
    {
        using var scope = TensorScope.Begin();
        var random = new Random(3);
        var values = Tensor.RandN([5, 7], random);
        using var half = Linear.FromWeight(values.To(DType.BFloat16), Tensor.RandN([5], random).To(DType.BFloat16));
        Assert.Equal((7, 5), (half.InFeatures, half.OutFeatures));
        Assert.Equal(DType.BFloat16, half.Weight.DType);
        Assert.False(half.Weight.RequiresGrad);
        Assert.Equal("weight", half.Weight.Name);
        Assert.Equal(DType.Float32, half.Bias!.DType);                                      // a 16-bit bias is widened
        Assert.Equal((5L, 40L), half.CountParameters());                                     // the bias trains until frozen
        Assert.Equal(values.To(DType.BFloat16).ToArray(), half.EffectiveWeight().ToArray());
        Assert.False(half.KeepsInputForBackward);

        using var full = Linear.FromWeight(Tensor.FromArray(values.ToArray(), 5, 7));
        Assert.True(full.Weight.RequiresGrad);
        Assert.Null(full.Bias);

        var e = Assert.Throws<ArgumentException>(() => Linear.FromWeight(Tensor.Zeros(3, 4), Tensor.Zeros(4)));
        Assert.Contains("[3]", e.Message);
        Assert.Throws<ArgumentException>(() => Linear.FromWeight(Tensor.Zeros(4)));
        Assert.Throws<ArgumentException>(() => Linear.FromWeight(Tensor.Zeros(4, 6).Slice(1, 0, 3)));
    }

    [Fact]
    public void Converting_in_place_keeps_the_tensor_and_needs_a_frozen_dense_leaf()
    {
        using var scope = TensorScope.Begin();
        var t = Tensor.FromArray([1f, 1.00390625f, -3.14159f, 65504f, 1e-8f, float.PositiveInfinity], 2, 3);
        t.Name = "w";
        var view = t.Slice(1, 0, 2);
        t.RequiresGrad = true;
        var e = Assert.Throws<InvalidOperationException>(() => t.ConvertInPlace(DType.BFloat16));
        Assert.Contains("freeze", e.Message);
        t.RequiresGrad = false;
        Assert.Throws<InvalidOperationException>(() => view.ConvertInPlace(DType.BFloat16));
        t.ConvertInPlace(DType.BFloat16);
        Assert.Equal(DType.BFloat16, t.DType);
        Assert.Equal("w", t.Name);
        Assert.Equal(
            new[] { 1f, 1f, -3.140625f, 65536f, Float16Conversions.FromBFloat16(Float16Conversions.ToBFloat16(1e-8f)), float.PositiveInfinity },
            t.ToArray());
        Assert.Equal(new[] { 1f, 1.00390625f, 65504f, 1e-8f }, view.ToArray());          // views keep the old storage
        t.ConvertInPlace(DType.Float16);                                                      // bf16 → fp16 through float32
        Assert.Equal(DType.Float16, t.DType);
        Assert.Equal(-3.140625f, t.ToArray()[2]);
        t.ConvertInPlace(DType.Float32);
        Assert.Equal(DType.Float32, t.DType);
        Assert.Equal(1f, t.AsSpan()[0]);
    }

    [Fact]
    public void Copies_between_float32_and_16bit_tensors_convert()
    {
        using var scope = TensorScope.Begin();
        var source = Tensor.RandN([4, 6], new Random(4));
        var half = Tensor.Zeros([4, 6], DType.BFloat16).CopyFrom(source);
        Assert.Equal(source.To(DType.BFloat16).ToArray(), half.ToArray());
        var wide = Tensor.Zeros(4, 6).CopyFrom(half);
        Assert.Equal(half.ToArray(), wide.ToArray());
        var fp16 = Tensor.Zeros([6, 4], DType.Float16).CopyFrom(source.Transpose(0, 1));     // from a strided view
        Assert.Equal(source.Transpose(0, 1).Contiguous().To(DType.Float16).ToArray(), fp16.ToArray());
        Assert.Throws<InvalidOperationException>(() => Tensor.Zeros([6, 8], DType.BFloat16).Slice(1, 0, 4).CopyFrom(fp16));
    }

    [Fact]
    public void Vectorized_bf16_conversions_round_like_the_scalar_ones()
    {
        var random = new Random(5);
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, float.NaN, -float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.MaxValue, float.Epsilon,
            BitConverter.UInt32BitsToSingle(0x3F80_8000), BitConverter.UInt32BitsToSingle(0x3F81_8000),      // ties: to even
            BitConverter.UInt32BitsToSingle(0x7F7F_FFFF), BitConverter.UInt32BitsToSingle(0x7FA0_0001),      // overflow, signalling NaN
        };
        for (int i = 0; i < 1000; i++) values.Add(BitConverter.UInt32BitsToSingle((uint)random.NextInt64(0, 1L << 32)));
        for (int n = 0; n <= values.Count; n += n < 70 ? 1 : 97)                               // every SIMD tail length
        {
            var source = values.Take(n).ToArray();
            var narrow = new ushort[n];
            Float16Conversions.Narrow(source, narrow, DType.BFloat16);
            var wide = new float[n];
            Float16Conversions.Widen(narrow, wide, DType.BFloat16);
            for (int i = 0; i < n; i++)
            {
                Assert.Equal(Float16Conversions.ToBFloat16(source[i]), narrow[i]);
                Assert.Equal(BitConverter.SingleToUInt32Bits(Float16Conversions.FromBFloat16(narrow[i])), BitConverter.SingleToUInt32Bits(wide[i]));
            }
        }
    }

    [Theory]
    [InlineData(DType.BFloat16)]
    [InlineData(DType.Float16)]
    public void Vectorized_widening_is_exact_for_every_16bit_pattern(DType dtype)
    {
        var all = Enumerable.Range(0, 1 << 16).Select(i => (ushort)i).ToArray();
        var wide = new float[all.Length + 5];
        Float16Conversions.Widen(all.AsSpan(5), wide.AsSpan(0, all.Length - 5), dtype);     // an unaligned start and a tail
        Float16Conversions.Widen(all.AsSpan(0, 5), wide.AsSpan(all.Length - 5), dtype);
        for (int i = 0; i < all.Length; i++)
        {
            ushort bits = all[(i + 5) % all.Length];
            float expected = dtype == DType.BFloat16 ? Float16Conversions.FromBFloat16(bits) : Float16Conversions.FromFloat16(bits);
            if (float.IsNaN(expected)) Assert.True(float.IsNaN(wide[i]), $"0x{bits:X4} is NaN, widened to {wide[i]}");
            else Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(wide[i]), $"0x{bits:X4}: {wide[i]} vs {expected}");
        }
    }

    // ---- Embedding -----------------------------------------------------------------------------------------

    [Theory]
    [InlineData(DType.BFloat16)]
    [InlineData(DType.Float16)]
    public void Embedding_lookup_in_a_16bit_table_widens_the_rows(DType dtype)
    {
        using var scope = TensorScope.Begin();
        using var embedding = new Embedding(50, 37, new Random(6), std: 1f);
        var expected = embedding.Weight.To(dtype).To(DType.Float32);                         // [vocab, dim] rounded
        embedding.Weight.RequiresGrad = false;
        embedding.Weight.ConvertInPlace(dtype);
        int[] ids = [0, 49, 7, 7, 13, 2];
        var y = embedding.Forward(ids, 2, 3);                                                 // [2, 3, 37]
        Assert.Equal([2, 3, 37], y.Shape.ToArray());
        Assert.Equal(DType.Float32, y.DType);
        Assert.False(y.RequiresGrad);
        Assert.Equal(Ops.Embedding(expected, ids, 2, 3).ToArray(), y.ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => embedding.Forward([50], 1, 1));
    }

    // ---- a whole model -------------------------------------------------------------------------------------

    [Theory]
    [InlineData(DType.BFloat16, false)]
    [InlineData(DType.BFloat16, true)]
    [InlineData(DType.Float16, false)]
    public void A_llama_with_16bit_matrices_gives_the_logits_of_the_rounded_float_model(DType dtype, bool tied)
    {
        var config = Tiny with { TieWordEmbeddings = tied };
        using var reference = RoundedFloatModel(config, dtype);
        using var model = SixteenBitModel(config, dtype);
        long bytes = model.NamedParameters().Sum(p => p.Tensor.Count * p.Tensor.DType.ElementSize());
        long floatBytes = reference.NamedParameters().Sum(p => p.Tensor.Count * 4);
        var expected = Logits(reference);
        var actual = Logits(model);
        var (error, _) = RelativeError(actual, expected);
        output.WriteLine($"{dtype}, tied {tied}: logits relative error {error:E2}; parameters {bytes:N0} B vs {floatBytes:N0} B in float32");
        AssertClose(actual, expected, 1e-4, "logits");
        Assert.True(bytes < floatBytes * 0.6, $"{bytes} B of parameters should be about half of {floatBytes} B");

        // Token by token through the KV cache: every projection takes the one-row GEMV path.
        using var cache = new KvCache(config, 1, 8);
        using var noGrad = GradMode.Disable();
        var steps = new List<float>();
        foreach (int id in Ids.Take(6))
        {
            using var scope = TensorScope.Begin();
            steps.AddRange(model.Forward([id], 1, 1, cache).ToArray());
        }
        AssertClose(steps.ToArray(), expected.Take(6 * config.VocabSize).ToArray(), 1e-4, "cached one-token logits");
    }

    /// <summary>Digits counting up by a per-sequence step modulo 10 (the toy task of the training tests).</summary>
    private static Batch DigitBatch(Random random, int batch, int length)
    {
        var inputs = new int[batch * length];
        var targets = new int[batch * length];
        for (int b = 0; b < batch; b++)
        {
            int start = random.Next(10), step = random.Next(1, 10);
            for (int t = 0; t < length; t++)
            {
                inputs[b * length + t] = (start + t * step) % 10;
                targets[b * length + t] = t == 0 ? -100 : (start + (t + 1) * step) % 10;
            }
        }
        return new Batch(inputs, targets, batch, length);
    }

    /// <summary>Ten steps of LoRA on every projection of <paramref name="model"/>; the losses.</summary>
    private static IReadOnlyList<float> TrainLoRA(LlamaForCausalLM model)
    {
        PeftModel.Create(model, new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.AllLinear });    // the model owns the layers
        var random = new Random(7);
        using var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), BatchSource.FromFunction(_ => DigitBatch(random, 8, 12)),
            new TrainerOptions { MaxSteps = 10, LearningRate = 1e-2f, Schedule = "constant", MaxGradNorm = 1f });
        return trainer.Train().Losses;
    }

    [Fact]
    public void LoRA_training_on_a_bf16_base_lowers_the_loss_as_on_the_rounded_float_base()
    {
        using var reference = RoundedFloatModel(Tiny, DType.BFloat16);
        using var model = SixteenBitModel(Tiny, DType.BFloat16);
        var frozen = model.NamedParameters().Where(p => p.Tensor.Rank == 2).Select(p => (p.Tensor, Bits: Bits(p.Tensor))).ToList();
        var expected = TrainLoRA(reference);
        var losses = TrainLoRA(model);
        output.WriteLine($"losses on the bf16 base: {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        output.WriteLine($"on the rounded float base: {string.Join(", ", expected.Select(l => l.ToString("F4")))}");
        Assert.True(losses[^1] < losses[0] - 0.1f, $"loss went from {losses[0]:F4} to {losses[^1]:F4}");
        for (int i = 0; i < losses.Count; i++)
            Assert.True(Math.Abs(losses[i] - expected[i]) <= 1e-3f * (1 + Math.Abs(expected[i])), $"step {i + 1}: loss {losses[i]} vs {expected[i]}");
        Assert.All(frozen, p =>                                                               // the base stays bf16 and untouched
        {
            Assert.Equal(DType.BFloat16, p.Tensor.DType);
            Assert.Equal(p.Bits, Bits(p.Tensor));
        });
    }

    // ---- merging into a 16-bit base ------------------------------------------------------------------------

    private static void Randomize(Tensor t, int seed, float std)
    {
        var random = new Random(seed);
        var span = t.AsSpan();
        for (int i = 0; i < span.Length; i++) span[i] = (float)(random.NextGaussian() * std);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LoRA_merges_into_a_bf16_base_as_a_rounded_sum_and_unmerges(bool dora)
    {
        using var peft = PeftModel.Create(SixteenBitModel(Tiny, DType.BFloat16),
            new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.Parse("q_proj,down_proj"), UseDoRA = dora });
        int seed = 10;
        foreach (var (_, layer) in peft.LoRALayers) Randomize(layer.LoraB("default"), seed++, 0.05f);
        var (path, probe) = peft.LoRALayers.First();
        var baseWeight = ((Linear)probe.BaseLayer).Weight;
        var original = Bits(baseWeight);
        using var delta = probe.Delta("default");                                            // [out, in] s·B·A
        using var effective = probe.EffectiveWeight();                                       // [out, in] float32: W + s·B·A (DoRA-scaled)
        using var expectedMerged = effective.To(DType.BFloat16);
        var unmerged = Logits(peft.Model);

        peft.Merge();
        Assert.Equal(DType.BFloat16, baseWeight.DType);
        Assert.Same(baseWeight, ((Linear)probe.BaseLayer).Weight);
        Assert.Equal(Bits(expectedMerged), Bits(baseWeight));
        var merged = Logits(peft.Model);
        var (error, _) = RelativeError(merged, unmerged);
        output.WriteLine($"{(dora ? "DoRA" : "LoRA")} on {path}: merged logits differ by {error:E2} relative (bf16 rounding of the merged weights)");
        AssertClose(merged, unmerged, 2e-2, "merged logits");

        peft.Unmerge();
        var restored = Bits(baseWeight);
        if (dora) Assert.Equal(original, restored);                                          // DoRA keeps W0
        else
        {
            // W + Δ − Δ, each sum rounded to bf16 (8 significant bits): off by at most a rounding of each.
            var w0 = original.Select(Float16Conversions.FromBFloat16).ToArray();
            var w1 = restored.Select(Float16Conversions.FromBFloat16).ToArray();
            var d = delta.ToArray();
            for (int i = 0; i < w0.Length; i++)
                Assert.True(Math.Abs(w1[i] - w0[i]) <= (Math.Abs(w0[i]) + 2 * Math.Abs(d[i])) / 128, $"element {i}: {w1[i]} vs {w0[i]} (Δ {d[i]})");
        }
        AssertClose(Logits(peft.Model), unmerged, 2e-2, "unmerged logits");
    }

    [Fact]
    public void MergeAndUnload_on_a_bf16_base_builds_float_layers_of_the_widened_sum()
    {
        using var peft = PeftModel.Create(SixteenBitModel(Tiny, DType.BFloat16), new LoRAConfig { Rank = 4, Alpha = 8, Targets = TargetModules.Parse("v_proj") });
        foreach (var (_, layer) in peft.LoRALayers) Randomize(layer.LoraB("default"), 3, 0.05f);
        var expected = peft.LoRALayers.ToDictionary(l => l.Path, l => l.Layer.EffectiveWeight().ToArray());
        var logits = Logits(peft.Model);
        var model = peft.MergeAndUnload();
        foreach (var (path, weight) in expected)
        {
            var plain = Assert.IsType<Linear>(model.GetModule(path));
            Assert.Equal(DType.Float32, plain.Weight.DType);
            Assert.Equal(weight, plain.Weight.ToArray());
        }
        AssertClose(Logits(model), logits, 1e-4, "logits after MergeAndUnload");
        model.Dispose();
    }

    [Fact]
    public void IA3_and_VeRA_merge_into_a_bf16_base_and_IA3_restores_it_exactly()
    {
        using (var ia3 = IA3Model.Create(SixteenBitModel(Tiny, DType.BFloat16), new IA3Config()))
        {
            var random = new Random(8);
            foreach (var (_, layer) in ia3.IA3Layers)
            {
                var v = layer.Vector("default").AsSpan();
                for (int i = 0; i < v.Length; i++) v[i] = 1f + (float)(random.NextGaussian() * 0.3);
            }
            var weights = ia3.IA3Layers.Select(l => ((Linear)l.Layer.BaseLayer).Weight).ToArray();
            var original = weights.Select(Bits).ToArray();
            var logits = Logits(ia3.Model);
            ia3.Merge();
            Assert.All(weights, w => Assert.Equal(DType.BFloat16, w.DType));
            Assert.NotEqual(original[0], Bits(weights[0]));
            AssertClose(Logits(ia3.Model), logits, 2e-2, "IA3 merged logits");
            ia3.Unmerge();
            for (int i = 0; i < weights.Length; i++) Assert.Equal(original[i], Bits(weights[i]));
        }

        using var vera = VeraModel.Create(SixteenBitModel(Tiny, DType.BFloat16), new VeraConfig { Rank = 8, Targets = TargetModules.Parse("q_proj,up_proj") });
        foreach (var (_, layer) in vera.VeraLayers) Randomize(layer.LambdaB("default"), 9, 0.5f);
        var veraLogits = Logits(vera.Model);
        var probe = (Linear)vera.VeraLayers.First().Layer.BaseLayer;
        var before = probe.Weight.ToArray();
        vera.Merge();
        Assert.Equal(DType.BFloat16, probe.Weight.DType);
        Assert.NotEqual(before, probe.Weight.ToArray());
        AssertClose(Logits(vera.Model), veraLogits, 2e-2, "VeRA merged logits");
        vera.Unmerge();
        AssertClose(probe.Weight.ToArray(), before, 1e-2, "VeRA unmerged weight");
    }

    [Fact]
    public void Delta_LoRA_refuses_a_16bit_base_naming_the_layer()
    {
        using var model = SixteenBitModel(Tiny, DType.BFloat16);
        var e = Assert.Throws<ArgumentException>(() => PeftModel.Create(model,
            new LoRAConfig { Targets = TargetModules.Parse("q_proj"), DeltaLoRA = new DeltaLoRAOptions() }));
        output.WriteLine(e.Message);
        Assert.Contains("model.layers.0.self_attn.q_proj", e.Message);
        Assert.Contains("BFloat16", e.Message);
    }
}
