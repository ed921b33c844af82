using System.Globalization;
using PeftGen.Data;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Optim;
using PeftGen.Tensors;

namespace PeftGen.Methods.Sparse;

/// <summary>One candidate parameter of sparse fine-tuning: its entries and how many of them train.</summary>
/// <param name="Path">Parameter path, e.g. model.layers.0.self_attn.q_proj.weight.</param>
/// <param name="Shape">The parameter's shape.</param>
/// <param name="Entries">Its number of entries.</param>
/// <param name="TrainableEntries">Entries that train (0 leaves the tensor frozen).</param>
public sealed record SparseTensorPlan(string Path, IReadOnlyList<int> Shape, long Entries, long TrainableEntries);

/// <summary>
/// Sparse fine-tuning: trains a chosen subset of a model's parameter entries and keeps every other entry exactly at
/// its value. Tensors holding chosen entries require gradients; <see cref="MaskGradients"/> zeroes the gradient of the
/// entries that must not train (so clipping and the optimizer moments see only the trainable ones) and
/// <see cref="AfterStep"/> writes the original values back into them (undoing weight decay, which touches every
/// entry). A trainer built on this object (<see cref="IAdaptedModel"/>) runs both. The learned change is a
/// <see cref="SparseDelta"/> (indices and values) that saves to safetensors and applies to a fresh copy of the base.
/// Memory: a float copy of every trained tensor's original values.
/// </summary>
public sealed class SparseFineTuning : IGradientMask, IAfterStepHook, IAdaptedModel
{
    private readonly List<Selected> _selected;
    private readonly List<SparseTensorPlan> _plan;
    private readonly Module _model;

    private SparseFineTuning(Module model, SparseFineTuningConfig config, List<Selected> selected, List<SparseTensorPlan> plan)
    {
        _model = model;
        Config = config;
        _selected = selected;
        _plan = plan;
    }

    /// <summary>The settings.</summary>
    public SparseFineTuningConfig Config { get; }

    /// <summary>Every candidate parameter with its trainable-entry count, in model order.</summary>
    public IReadOnlyList<SparseTensorPlan> Plan => _plan;

    /// <summary>Entries that train, exactly (the sum of <see cref="SparseTensorPlan.TrainableEntries"/>).</summary>
    public long TrainableEntries => _plan.Sum(p => p.TrainableEntries);

    /// <summary>Entries of the candidate parameters.</summary>
    public long CandidateEntries => _plan.Sum(p => p.Entries);

    /// <summary>
    /// Chooses the entries of <paramref name="model"/> that train and freezes everything else. With a score, the
    /// candidates' gradients of <see cref="SparseFineTuningConfig.CalibrationBatches"/> batches from
    /// <paramref name="calibration"/> (loss computed by <paramref name="loss"/>) rank the entries; ties go to the earlier
    /// entry (model order, then row-major). Leaves the gradients empty.
    /// </summary>
    /// <exception cref="ArgumentException">A setting is invalid, a target matches no parameter, or a score lacks calibration data.</exception>
    /// <exception cref="InvalidOperationException">Calibration produced a non-finite gradient.</exception>
    public static SparseFineTuning Create(Module model, SparseFineTuningConfig config, Func<Batch, Tensor>? loss = null, IBatchSource? calibration = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (config.Score != SparseScore.None && (loss == null || calibration == null))
            throw new ArgumentException($"Sparse score {config.Score} ranks entries by calibration gradients: pass a loss function and a calibration batch source.", nameof(calibration));
        var candidates = ResolveCandidates(model, config.Targets);

        model.Freeze();
        foreach (var (_, tensor) in candidates) tensor.RequiresGrad = true;
        bool[]?[] masks = config.Score == SparseScore.None
            ? new bool[]?[candidates.Count]
            : TopK(candidates, Scores(candidates, config, loss!, calibration!), config.Fraction);

        var selected = new List<Selected>();
        var plan = new List<SparseTensorPlan>();
        for (int c = 0; c < candidates.Count; c++)
        {
            var (path, tensor) = candidates[c];
            var mask = masks[c];
            long trainable = mask == null ? tensor.Count : mask.LongCount(m => m);
            plan.Add(new SparseTensorPlan(path, tensor.ShapeArray.ToArray(), tensor.Count, trainable));
            if (trainable == 0)
            {
                tensor.RequiresGrad = false;
                continue;
            }
            if (trainable == tensor.Count) mask = null;
            selected.Add(new Selected(path, tensor, mask, tensor.ToArray()));
        }
        return new SparseFineTuning(model, config, selected, plan);
    }

    /// <inheritdoc />
    public void MaskGradients()
    {
        foreach (var s in _selected)
        {
            if (s.Mask == null || s.Tensor.Grad == null) continue;
            var g = s.Tensor.Grad.AsSpan();
            for (int i = 0; i < g.Length; i++)
                if (!s.Mask[i]) g[i] = 0f;
        }
    }

    /// <summary>Writes the original values back into the entries that must not train.</summary>
    public void RestoreFrozenEntries()
    {
        foreach (var s in _selected)
        {
            if (s.Mask == null) continue;
            var p = s.Tensor.AsSpan();
            for (int i = 0; i < p.Length; i++)
                if (!s.Mask[i]) p[i] = s.Original[i];
        }
    }

    /// <inheritdoc />
    public void AfterStep(int step) => RestoreFrozenEntries();

    /// <summary>The change of every trainable entry since creation (all of them, zero changes included), by parameter path.</summary>
    public SparseDelta Delta()
    {
        var tensors = new List<SparseDeltaTensor>();
        foreach (var s in _selected)
        {
            var current = s.Tensor.AsSpan();
            long count = s.Mask == null ? current.Length : s.Mask.LongCount(m => m);
            var indices = new long[count];
            var values = new float[count];
            int n = 0;
            for (int i = 0; i < current.Length; i++)
            {
                if (s.Mask != null && !s.Mask[i]) continue;
                indices[n] = i;
                values[n++] = current[i] - s.Original[i];
            }
            tensors.Add(new SparseDeltaTensor(s.Path, s.Tensor.ShapeArray.ToArray(), indices, values));
        }
        return new SparseDelta(tensors);
    }

    /// <summary>"trainable entries: … || all params: … || trainable%: …" (entries, not whole tensors).</summary>
    public string TrainableParametersSummary()
    {
        long total = _model.CountParameters().Total;
        return string.Create(CultureInfo.InvariantCulture,
            $"trainable entries: {TrainableEntries:N0} || all params: {total:N0} || trainable%: {100.0 * TrainableEntries / Math.Max(1, total):F4}");
    }

    // ---- IAdaptedModel: how the trainer trains and saves it --------------------------------------------------------------

    /// <summary>The file <see cref="SaveAdapter"/> writes in its folder: the sparse delta, in <see cref="SparseDelta"/>'s format.</summary>
    public const string DeltaFileName = "sparse_delta.safetensors";

    /// <inheritdoc />
    Module IAdaptedModel.TrainedModule => _model;

    /// <summary>The model as a Llama-family causal LM, or null when it is another module.</summary>
    public LlamaForCausalLM? CausalLM => _model as LlamaForCausalLM;

    /// <summary>Sparse fine-tuning draws nothing at random; the layer drop's generator when one is installed on the model.</summary>
    public IReadOnlyList<Rng> RandomGenerators => AdaptedModel.Generators(_model);

    /// <summary>This object, as the gradient mask and as the after-step hook that restores the entries that do not train.</summary>
    public TrainingHooks PrepareTraining() => new([this], [this]);

    /// <summary>
    /// Writes <see cref="Delta"/> to <paramref name="folder"/> as <see cref="DeltaFileName"/> (written in full under a
    /// temporary name, then renamed). Sparse fine-tuning has no PEFT adapter config, so nothing else is written and
    /// <paramref name="baseModelNameOrPath"/> is not recorded.
    /// </summary>
    public void SaveAdapter(string folder, string? baseModelNameOrPath = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        Directory.CreateDirectory(folder);
        Delta().Save(Path.Combine(folder, DeltaFileName));
    }

    /// <summary>Disposes the model (sparse fine-tuning changes its weights in place).</summary>
    public void Dispose() => _model.Dispose();

    private static List<(string Path, Tensor Tensor)> ResolveCandidates(Module model, TargetModules targets)
    {
        var all = new List<(string Path, string ModulePath, Module Module, Tensor Tensor)>();
        foreach (var (modulePath, module) in model.NamedModules())
            foreach (var (name, tensor) in module.OwnParameters())
                all.Add((Module.Join(modulePath, name), modulePath, module, tensor));
        bool Matches((string Path, string ModulePath, Module Module, Tensor Tensor) p) =>
            targets.IsAllLinear ? p.Module is LinearBase && !TargetModules.IsOutputHead(p.ModulePath)
            : targets.Pattern != null ? targets.Matches(p.Path) || targets.Matches(p.ModulePath)
            : targets.Names.Any(n => TargetModules.MatchesName(p.Path, n) || TargetModules.MatchesName(p.ModulePath, n));
        foreach (var name in targets.Names)
            if (!all.Any(p => TargetModules.MatchesName(p.Path, name) || TargetModules.MatchesName(p.ModulePath, name)))
                throw new ArgumentException($"Sparse fine-tuning target '{name}' matches no parameter. Parameters look like '{all.FirstOrDefault().Path}'.", nameof(targets));
        var selected = all.Where(Matches).Select(p => (p.Path, p.Tensor)).ToList();
        if (selected.Count == 0)
            throw new ArgumentException($"Sparse fine-tuning targets '{targets}' match no parameter. Parameters look like '{all.FirstOrDefault().Path}'.", nameof(targets));
        foreach (var (path, tensor) in selected)
            if (tensor.DType != DType.Float32)
                throw new ArgumentException($"Sparse fine-tuning target '{path}' is stored as {tensor.DType}; only float32 parameters can train.", nameof(targets));
        return selected;
    }

    /// <summary>Σ over calibration batches of |g| or |g·w| per entry.</summary>
    private static float[][] Scores(List<(string Path, Tensor Tensor)> candidates, SparseFineTuningConfig config, Func<Batch, Tensor> loss, IBatchSource calibration)
    {
        var scores = candidates.Select(c => new float[c.Tensor.Count]).ToArray();
        foreach (var (_, tensor) in candidates) tensor.ZeroGrad();
        for (int b = 0; b < config.CalibrationBatches; b++)
        {
            var batch = calibration.Next();
            batch.Validate();
            using (TensorScope.Begin()) loss(batch).Backward();
            for (int c = 0; c < candidates.Count; c++)
            {
                var (path, tensor) = candidates[c];
                if (tensor.Grad == null) continue;                                             // unused by the loss: scores stay 0
                var g = tensor.Grad.AsSpan();
                var w = tensor.AsSpan();
                var s = scores[c];
                for (int i = 0; i < s.Length; i++)
                {
                    float v = config.Score == SparseScore.GradientTimesWeight ? MathF.Abs(g[i] * w[i]) : MathF.Abs(g[i]);
                    if (!float.IsFinite(v))
                        throw new InvalidOperationException($"Calibration batch {b + 1} gave '{path}' a non-finite gradient at entry {i}; check the data and the model before scoring.");
                    s[i] += v;
                }
                tensor.ZeroGrad();
            }
        }
        return scores;
    }

    /// <summary>Masks of the k = round(fraction·N) largest scores over all candidates; ties go to the earlier entry.</summary>
    private static bool[]?[] TopK(List<(string Path, Tensor Tensor)> candidates, float[][] scores, float fraction)
    {
        long total = scores.Sum(s => (long)s.Length);
        if (total > Array.MaxLength)
            throw new ArgumentException($"Scored sparse fine-tuning ranks at most {Array.MaxLength:N0} entries at once; the targets hold {total:N0}. Target fewer parameters.", nameof(candidates));
        long k = Math.Max(1, (long)Math.Round((double)fraction * total, MidpointRounding.AwayFromZero));
        var sorted = new float[total];
        long offset = 0;
        foreach (var s in scores)
        {
            s.CopyTo(sorted, offset);
            offset += s.Length;
        }
        Array.Sort(sorted);
        float threshold = sorted[total - k];                                                   // the k-th largest score
        long above = scores.Sum(s => s.LongCount(v => v > threshold));
        long ties = k - above;                                                                 // entries equal to the threshold still to take
        var masks = new bool[]?[candidates.Count];
        for (int c = 0; c < scores.Length; c++)
        {
            var mask = new bool[scores[c].Length];
            for (int i = 0; i < mask.Length; i++)
            {
                float v = scores[c][i];
                if (v > threshold) mask[i] = true;
                else if (v == threshold && ties > 0)
                {
                    mask[i] = true;
                    ties--;
                }
            }
            masks[c] = mask;
        }
        return masks;
    }

    private sealed record Selected(string Path, Tensor Tensor, bool[]? Mask, float[] Original);
}
