using PeftGen.Autograd;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.Sparse;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.Methods.Bottleneck;
using PeftGen.Tests.Training;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Methods.Sparse;

public class SparseFineTuningTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly LlamaConfig Tiny = BottleneckAdapterTests.Tiny;

    private static Tensor Loss(LlamaForCausalLM model, Batch b) => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length);

    private static SparseFineTuning Scored(LlamaForCausalLM model, SparseScore score, float fraction, int[]? steps = null) =>
        SparseFineTuning.Create(model, new SparseFineTuningConfig { Score = score, Fraction = fraction, CalibrationBatches = 2 },
            b => Loss(model, b), BatchSource.FromFunction(p => TrainerTests.DigitBatch(p, seedOffset: 99, steps: steps)));

    /// <summary>The trainer of the sparse selection: it runs the selection's gradient mask and restore after each step.</summary>
    private static Trainer Trainer(LlamaForCausalLM model, SparseFineTuning sparse, TrainerOptions options, int[]? steps = null) =>
        new(sparse, BatchSource.FromFunction(p => TrainerTests.DigitBatch(p, steps: steps)), options, loss: b => Loss(model, b));

    [Theory]
    [InlineData(SparseScore.GradientMagnitude)]
    [InlineData(SparseScore.GradientTimesWeight)]
    public void Selects_exactly_the_top_k_entries_by_score(SparseScore score)
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        // Independent scores: the same two calibration batches, gradients of every linear weight.
        var linear = model.NamedParameters().Where(p => p.Path.EndsWith("_proj.weight", StringComparison.Ordinal)).ToList();
        var scores = linear.ToDictionary(p => p.Path, p => new double[p.Tensor.Count]);
        for (int b = 0; b < 2; b++)
        {
            var batch = TrainerTests.DigitBatch(b, seedOffset: 99);
            using (TensorScope.Begin()) Loss(model, batch).Backward();
            foreach (var (path, t) in linear)
            {
                var g = t.Grad!.ToArray();
                var w = t.ToArray();
                for (int i = 0; i < g.Length; i++) scores[path][i] += score == SparseScore.GradientMagnitude ? Math.Abs(g[i]) : Math.Abs(g[i] * w[i]);
            }
            foreach (var (_, t) in model.NamedParameters()) t.ZeroGrad();
        }
        long total = linear.Sum(p => p.Tensor.Count);
        long k = (long)Math.Round(0.05 * total, MidpointRounding.AwayFromZero);
        var ranked = scores.SelectMany(s => s.Value.Select((v, i) => (s.Key, i, v))).OrderByDescending(e => e.v).ToList();
        double threshold = ranked[(int)k - 1].v;

        var sparse = Scored(model, score, 0.05f);
        Assert.Equal(k, sparse.TrainableEntries);
        Assert.Equal(total, sparse.CandidateEntries);
        var delta = sparse.Delta();
        Assert.Equal(k, delta.Count);
        // Every chosen entry scores at least the k-th largest score (up to float summation order), every other at most.
        double worstInside = delta.Tensors.SelectMany(t => t.Indices.Select(i => scores[t.Path][i])).Min();
        var chosen = delta.Tensors.SelectMany(t => t.Indices.Select(i => (t.Path, (int)i))).ToHashSet();
        double bestOutside = ranked.Where(e => !chosen.Contains((e.Key, e.i))).Max(e => e.v);
        output.WriteLine($"k = {k} of {total}; threshold {threshold:E4}, lowest chosen {worstInside:E4}, highest left out {bestOutside:E4}");
        Assert.True(worstInside >= threshold * (1 - 1e-5) && bestOutside <= threshold * (1 + 1e-5),
            $"chosen entries must be the top k = {k}: lowest chosen {worstInside:E6}, highest left out {bestOutside:E6}, k-th score {threshold:E6}");
        Assert.Equal(linear.Count(p => delta.Tensors.Any(t => t.Path == p.Path)), model.TrainableParameters().Count());
    }

    [Fact]
    public void Only_masked_entries_change_after_training_steps_even_with_weight_decay()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        var before = model.NamedParameters().ToDictionary(p => p.Path, p => p.Tensor.ToArray());
        var sparse = Scored(model, SparseScore.GradientMagnitude, 0.02f);
        var chosen = sparse.Delta().Tensors.ToDictionary(t => t.Path, t => t.Indices.ToHashSet());
        using (var trainer = Trainer(model, sparse, new TrainerOptions { MaxSteps = 3, LearningRate = 1e-2f, WeightDecay = 0.1f, MaxGradNorm = 1f }))
            trainer.Train();
        long changed = 0, changedOutside = 0;
        foreach (var (path, p) in model.NamedParameters())
        {
            var now = p.ToArray();
            for (int i = 0; i < now.Length; i++)
            {
                if (now[i] == before[path][i]) continue;
                if (chosen.TryGetValue(path, out var set) && set.Contains(i)) changed++;
                else changedOutside++;
            }
        }
        output.WriteLine($"{changed} of {sparse.TrainableEntries} trainable entries changed; {changedOutside} others changed");
        Assert.Equal(0, changedOutside);
        Assert.True(changed > sparse.TrainableEntries / 2, $"only {changed} of {sparse.TrainableEntries} trainable entries changed");
    }

    [Fact]
    public void Name_selection_trains_whole_tensors_with_exact_counts()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        var sparse = SparseFineTuning.Create(model, SparseFineTuningConfig.BiasesAndNorms);
        long expected = (2L * Tiny.NumHiddenLayers + 1) * Tiny.HiddenSize;                    // input/post-attention norms per layer + final norm
        Assert.Equal(expected, sparse.TrainableEntries);
        Assert.Equal(expected, model.CountParameters().Trainable);
        Assert.All(sparse.Plan, p => Assert.EndsWith("norm.weight", p.Path));
        output.WriteLine(sparse.TrainableParametersSummary());

        using var other = new LlamaForCausalLM(Tiny, seed: 3);
        var byName = SparseFineTuning.Create(other, new SparseFineTuningConfig { Targets = TargetModules.List("q_proj", "down_proj"), Score = SparseScore.None, Fraction = 1f });
        Assert.Equal(Tiny.NumHiddenLayers * (32L * 32 + 64 * 32), byName.TrainableEntries);
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(-0.1f)]
    [InlineData(1.5f)]
    [InlineData(float.NaN)]
    public void Fractions_outside_zero_to_one_are_clear_errors(float fraction)
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        var e = Assert.Throws<ArgumentException>(() => SparseFineTuning.Create(model, new SparseFineTuningConfig { Fraction = fraction }));
        Assert.Contains("Sparse fine-tuning fraction must be in (0, 1]", e.Message);
        Assert.Equal(model.CountParameters().Total, model.CountParameters().Trainable);      // untouched
    }

    [Fact]
    public void Invalid_combinations_are_clear_errors()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 3);
        var e = Assert.Throws<ArgumentException>(() => SparseFineTuning.Create(model, new SparseFineTuningConfig { Score = SparseScore.None, Fraction = 0.5f }));
        Assert.Contains("needs a score", e.Message);
        e = Assert.Throws<ArgumentException>(() => SparseFineTuning.Create(model, new SparseFineTuningConfig { Score = SparseScore.GradientMagnitude }));
        Assert.Contains("pass a loss function and a calibration batch source", e.Message);
        e = Assert.Throws<ArgumentException>(() => SparseFineTuning.Create(model, new SparseFineTuningConfig { Targets = TargetModules.List("q_prj"), Score = SparseScore.None, Fraction = 1f }));
        Assert.Contains("target 'q_prj' matches no parameter", e.Message);
    }

    [Fact]
    public void Training_lowers_the_loss_and_the_saved_delta_reproduces_the_trained_model()
    {
        var file = Path.Combine(Path.GetTempPath(), $"peftgen-sparse-{Guid.NewGuid():N}.safetensors");
        try
        {
            using var model = new LlamaForCausalLM(Tiny, seed: 3);
            var sparse = Scored(model, SparseScore.GradientTimesWeight, 0.1f, steps: [1]);
            IReadOnlyList<float> losses;
            using (var trainer = Trainer(model, sparse, new TrainerOptions { MaxSteps = 30, LearningRate = 3e-2f, MaxGradNorm = 1f }, steps: [1]))
                losses = trainer.Train().Losses;
            float first = losses.Take(3).Average(), last = losses.TakeLast(3).Average();
            output.WriteLine($"loss {first:F4} → {last:F4} training {sparse.TrainableEntries:N0} entries");
            Assert.True(last < first - 0.3f, $"sparse training should lower the loss: first 3 steps {first:F4}, last 3 {last:F4}");

            sparse.Delta().Save(file);
            using (var st = SafetensorsFile.Open(file))
            {
                Assert.Equal("SPARSE_DELTA", st.Metadata["peftgen_type"]);
                var info = st.GetInfo("base_model.model.model.layers.0.self_attn.q_proj.weight.indices");
                Assert.Equal("I64", info.DTypeName);
            }
            var loaded = SparseDelta.Load(file);
            Assert.Equal(sparse.TrainableEntries, loaded.Count);
            using var fresh = new LlamaForCausalLM(Tiny, seed: 3);
            loaded.ApplyTo(fresh);
            double maxErr = 0;
            var trained = model.StateDict();
            foreach (var (path, p) in fresh.NamedParameters())
                maxErr = Math.Max(maxErr, p.ToArray().Zip(trained[path].ToArray(), (a, b) => (double)Math.Abs(a - b)).Max());
            output.WriteLine($"max |base + delta − trained| = {maxErr:E3}");
            Assert.True(maxErr < 1e-6, $"max |base + delta − trained| = {maxErr:E3}");
            loaded.ApplyTo(fresh, -1f);
            using var base_ = new LlamaForCausalLM(Tiny, seed: 3);
            var baseState = base_.StateDict();
            double back = fresh.NamedParameters().Max(p => p.Tensor.ToArray().Zip(baseState[p.Path].ToArray(), (a, b) => (double)Math.Abs(a - b)).Max());
            Assert.True(back < 1e-6, $"applying −delta should restore the base: max error {back:E3}");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Deltas_that_do_not_fit_are_clear_errors()
    {
        var file = Path.Combine(Path.GetTempPath(), $"peftgen-sparse-{Guid.NewGuid():N}.safetensors");
        try
        {
            var e = Assert.Throws<ArgumentException>(() => new SparseDelta([new SparseDeltaTensor("a.weight", [2, 3], [4, 2], [1f, 2f])]));
            Assert.Contains("strictly ascending", e.Message);
            e = Assert.Throws<ArgumentException>(() => new SparseDelta([new SparseDeltaTensor("a.weight", [2, 3], [6], [1f])]));
            Assert.Contains("index 6 at position 0 is outside [0, 6)", e.Message);

            new SparseDelta([new SparseDeltaTensor("model.norm.weight", [16], [0, 5], [1f, 2f])]).Save(file);
            using var model = new LlamaForCausalLM(Tiny, seed: 3);
            var before = model.Model.Norm.Weight.ToArray();
            var d = Assert.Throws<InvalidDataException>(() => SparseDelta.Load(file).ApplyTo(model));
            Assert.Contains("'model.norm.weight' is [32] in the model, [16] in the delta", d.Message);
            Assert.Equal(before, model.Model.Norm.Weight.ToArray());

            Safetensors.Save(file, [("x", Tensor.Zeros(2))]);
            d = Assert.Throws<InvalidDataException>(() => SparseDelta.Load(file));
            Assert.Contains("not a sparse delta", d.Message);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
