using PeftGen.Autograd;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Methods.VeRA;

/// <summary>
/// A linear layer with VeRA adapters: y = base(x) + Σ b ∘ (B_s · (d ∘ (A_s · dropout(x)))) over the active adapters,
/// where A_s = A[:r, :in] and B_s = B[:out, :r] are slices of projections shared by every adapted layer (frozen) and
/// only b [out] and d [r] train. Children follow PEFT's in-memory names: "base_layer", "vera_lambda_b.&lt;adapter&gt;",
/// "vera_lambda_d.&lt;adapter&gt;".
/// </summary>
public sealed class VeraLinear : AdaptedLinear
{
    private readonly ModuleDict<VeraVector> _lambdaB;
    private readonly ModuleDict<VeraVector> _lambdaD;
    private readonly Dictionary<string, VeraAdapterSettings> _settings = new(StringComparer.Ordinal);
    private readonly Rng _dropoutRng;

    /// <summary>Wraps <paramref name="baseLayer"/>; dropout masks come from <paramref name="dropoutRng"/>.</summary>
    internal VeraLinear(LinearBase baseLayer, Rng dropoutRng) : base(baseLayer)
    {
        _dropoutRng = dropoutRng ?? throw new ArgumentNullException(nameof(dropoutRng));
        _lambdaB = RegisterModule("vera_lambda_b", new ModuleDict<VeraVector>());
        _lambdaD = RegisterModule("vera_lambda_d", new ModuleDict<VeraVector>());
    }

    /// <inheritdoc />
    public override IEnumerable<string> AdapterNames => _settings.Keys;

    /// <summary>The rank, dropout and shared projections of an adapter.</summary>
    public VeraAdapterSettings GetSettings(string name) =>
        _settings.TryGetValue(name, out var s) ? s : throw new KeyNotFoundException($"This layer has no VeRA adapter '{name}' (have: {string.Join(", ", _settings.Keys)}).");

    /// <summary>b [out] of an adapter (scales the output channels).</summary>
    public Tensor LambdaB(string name) => _lambdaB[name].Weight;

    /// <summary>d [r] of an adapter (scales the rank channels).</summary>
    public Tensor LambdaD(string name) => _lambdaD[name].Weight;

    /// <summary>Adds an adapter of rank <paramref name="rank"/> over <paramref name="projections"/> (b = 0, d = <paramref name="dInitial"/>) and makes it active.</summary>
    /// <exception cref="ArgumentException">The name exists, or the projections do not cover this layer at this rank.</exception>
    internal void AddAdapter(string name, int rank, float dropout, float dInitial, VeraProjections projections, string path = "this layer")
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(projections);
        if (_settings.ContainsKey(name)) throw new ArgumentException($"Adapter '{name}' already exists on this layer.", nameof(name));
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "rank must be ≥ 1");
        projections.CheckCovers(path, rank, InFeatures, OutFeatures);
        _lambdaB.Add(name, new VeraVector(new float[OutFeatures]));                                   // b [out] = 0
        _lambdaD.Add(name, new VeraVector(Enumerable.Repeat(dInitial, rank).ToArray()));             // d [r] = d_initial
        _settings.Add(name, new VeraAdapterSettings(rank, dropout, projections));
        Activate(name);
    }

    /// <inheritdoc />
    private protected override void RequireAdapter(string name) => GetSettings(name);

    /// <summary>Removes an adapter (unmerge it first if merged).</summary>
    public override void DeleteAdapter(string name)
    {
        PrepareDelete(name);
        _lambdaB.Remove(name);
        _lambdaD.Remove(name);
        _settings.Remove(name);
    }

    /// <inheritdoc />
    public override Tensor Forward(Tensor input)
    {
        var y = BaseLayer.Forward(input);                                                        // [..., out]
        if (AdaptersDisabled)
        {
            if (Merged.Count > 0) throw new InvalidOperationException("Adapters are merged into the base weight; unmerge before disabling them.");
            return y;
        }
        foreach (var name in ActiveAdapters)
        {
            if (Merged.Contains(name)) continue;
            var s = _settings[name];
            var x = IsTraining && s.Dropout > 0 ? Ops.Dropout(input, s.Dropout, _dropoutRng) : input;
            var at = SliceA(s);                                                                  // [in, r], a transposed view
            var bt = SliceB(s);                                                                  // [r, out], a transposed view
            var u = Ops.MatMul(x, at);                                                           // [..., r] = A_s·x
            var v = Ops.MulChannels(u, _lambdaD[name].Weight);                                   // [..., r] = d ∘ A_s·x
            var w = Ops.MulChannels(Ops.MatMul(v, bt), _lambdaB[name].Weight);                   // [..., out] = b ∘ B_s·(…)
            y = Ops.Add(y, w);
        }
        return y;
    }

    /// <inheritdoc />
    public override Tensor EffectiveWeight()
    {
        var w = BaseLayer.EffectiveWeight();                                                     // [out, in]
        foreach (var name in ActiveAdapters)
            if (!Merged.Contains(name) && !AdaptersDisabled) AddDelta(w, name, 1f);
        return w;
    }

    /// <summary>ΔW = diag(b)·B_s·diag(d)·A_s [out, in] of an adapter, as a new tensor.</summary>
    public Tensor Delta(string name)
    {
        var delta = Tensor.Zeros(OutFeatures, InFeatures);                                       // [out, in]
        AddDelta(delta, name, 1f);
        return delta;
    }

    /// <summary>
    /// Folds the active adapters into a float32 or 16-bit base weight (W ← W + ΔW; a bf16/fp16 base is widened, updated and
    /// rounded back); a 4-bit base needs MergeAndUnload.
    /// </summary>
    public override void Merge()
    {
        var linear = BaseLayer as Linear
            ?? throw new InvalidOperationException($"The base of this layer is {BaseLayer.GetType().Name}; merging in place needs a float or 16-bit Linear base. Use MergeAndUnload to merge into a 16-bit copy.");
        foreach (var name in ActiveAdapters.Where(n => !Merged.Contains(n)).ToArray())
        {
            linear.UpdateWeight(w => AddDelta(w, name, 1f));
            Merged.Add(name);
        }
    }

    /// <summary>Undoes <see cref="Merge"/> (W ← W − ΔW, up to float rounding, or 16-bit rounding on a bf16/fp16 base).</summary>
    public override void Unmerge()
    {
        if (BaseLayer is Linear linear)
            for (int i = Merged.Count - 1; i >= 0; i--)
            {
                var name = Merged[i];
                linear.UpdateWeight(w => AddDelta(w, name, -1f));
            }
        Merged.Clear();
    }

    /// <summary>w [out, in] += sign · diag(b)·B_s·diag(d)·A_s, accumulated in double.</summary>
    private void AddDelta(Tensor w, string name, float sign)
    {
        var s = _settings[name];
        int r = s.Rank, inF = InFeatures, outF = OutFeatures;
        int inMax = s.Projections.InFeatures, rMax = s.Projections.Rank;
        var a = s.Projections.A.AsSpan();                                                        // [rMax, inMax]
        var bp = s.Projections.B.AsSpan();                                                       // [outMax, rMax]
        var lb = _lambdaB[name].Weight.AsSpan();                                                 // [out]
        var ld = _lambdaD[name].Weight.AsSpan();                                                 // [r]
        var dst = w.AsSpan();
        var row = new double[inF];
        for (int o = 0; o < outF; o++)
        {
            Array.Clear(row);
            for (int k = 0; k < r; k++)
            {
                double coefficient = (double)lb[o] * bp[o * rMax + k] * ld[k];
                if (coefficient == 0) continue;
                var ak = a.Slice(k * inMax, inF);
                for (int i = 0; i < inF; i++) row[i] += coefficient * ak[i];
            }
            for (int i = 0; i < inF; i++) dst[o * inF + i] += sign * (float)row[i];
        }
    }

    private Tensor SliceA(VeraAdapterSettings s) =>
        Ops.Transpose(Ops.Slice(Ops.Slice(s.Projections.A, 0, 0, s.Rank), 1, 0, InFeatures), 0, 1);

    private Tensor SliceB(VeraAdapterSettings s) =>
        Ops.Transpose(Ops.Slice(Ops.Slice(s.Projections.B, 0, 0, OutFeatures), 1, 0, s.Rank), 0, 1);
}

/// <summary>A VeRA adapter's fixed settings on one layer.</summary>
/// <param name="Rank">r (at most the shared projections' rank).</param>
/// <param name="Dropout">Dropout on the adapter input.</param>
/// <param name="Projections">The shared frozen A and B.</param>
public sealed record VeraAdapterSettings(int Rank, float Dropout, VeraProjections Projections);

/// <summary>A trainable VeRA scaling vector ("weight": b [out] or d [r]).</summary>
internal sealed class VeraVector : Module
{
    /// <summary>Creates the vector with initial values.</summary>
    public VeraVector(float[] initial)
    {
        ArgumentNullException.ThrowIfNull(initial);
        Weight = RegisterParameter("weight", Tensor.FromArray(initial, initial.Length));
    }

    /// <summary>The vector.</summary>
    public Tensor Weight { get; }
}
