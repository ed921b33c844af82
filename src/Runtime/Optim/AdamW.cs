using PeftGen.Backends;
using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>A set of parameters sharing optimizer settings (PyTorch's param_groups; LoRA+ gives B its own group).</summary>
/// <param name="Parameters">The tensors to update.</param>
/// <param name="LearningRateScale">Multiplier on the optimizer's learning rate for this group.</param>
/// <param name="WeightDecay">Decoupled weight decay of this group; null uses the optimizer's.</param>
public sealed record ParameterGroup(IReadOnlyList<Tensor> Parameters, float LearningRateScale = 1f, float? WeightDecay = null);

/// <summary>
/// Adam with decoupled weight decay (Loshchilov and Hutter), matching <c>torch.optim.AdamW</c>: bias-corrected
/// moments, decay applied as p ← p·(1 − lr·λ) before the Adam step. Parameters without a gradient are skipped.
/// </summary>
public sealed class AdamW : IOptimizer
{
    private readonly List<ParameterGroup> _groups;
    private readonly Dictionary<Tensor, (Tensor M, Tensor V)> _state = new(ReferenceEqualityComparer.Instance);

    /// <summary>Creates an optimizer over one group of parameters.</summary>
    /// <remarks>
    /// <paramref name="paged"/> keeps the moments in file-backed memory the OS can page out (see
    /// <see cref="Paged"/>); the arithmetic is the same either way.
    /// </remarks>
    public AdamW(IEnumerable<Tensor> parameters, float learningRate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 0.01f, bool paged = false)
        : this([new ParameterGroup((parameters ?? throw new ArgumentNullException(nameof(parameters))).ToList())],
            learningRate, beta1, beta2, eps, weightDecay, paged)
    {
    }

    /// <summary>Creates an optimizer over several parameter groups.</summary>
    /// <remarks>
    /// <paramref name="paged"/> keeps the moments in file-backed memory the OS can page out (see
    /// <see cref="Paged"/>); the arithmetic is the same either way.
    /// </remarks>
    public AdamW(IEnumerable<ParameterGroup> groups, float learningRate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 0.01f, bool paged = false)
    {
        ArgumentNullException.ThrowIfNull(groups);
        if (!(learningRate >= 0)) throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "must be ≥ 0");
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "must be in [0, 1)");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "must be in [0, 1)");
        if (!(eps > 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "must be > 0");
        if (!(weightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "must be ≥ 0");
        _groups = groups.ToList();
        foreach (var p in _groups.SelectMany(g => g.Parameters))
            if (!p.RequiresGrad)
                throw new ArgumentException($"AdamW was given {p.DescribeForError()}, which does not require gradients (a frozen parameter).", nameof(groups));
        LearningRate = learningRate;
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
        Paged = paged;
    }

    /// <summary>Base learning rate (schedules set it every step).</summary>
    public float LearningRate { get; set; }

    /// <summary>First-moment decay β1.</summary>
    public float Beta1 { get; }

    /// <summary>Second-moment decay β2.</summary>
    public float Beta2 { get; }

    /// <summary>Denominator ε.</summary>
    public float Eps { get; }

    /// <summary>Default decoupled weight decay λ.</summary>
    public float WeightDecay { get; }

    /// <summary>
    /// True when the moments live in memory-mapped temporary files (QLoRA's paged AdamW, on the host): the OS may
    /// write cold state to disk under memory pressure instead of the process running out of memory.
    /// </summary>
    public bool Paged { get; }

    /// <summary>Updates taken so far (t in the bias corrections).</summary>
    public int StepCount { get; private set; }

    /// <summary>The parameter groups.</summary>
    public IReadOnlyList<ParameterGroup> Groups => _groups;

    /// <summary>Every parameter the optimizer updates.</summary>
    public IEnumerable<Tensor> Parameters => _groups.SelectMany(g => g.Parameters);

    private const int StateFormat = 1;

    /// <summary>Applies one update from the accumulated gradients.</summary>
    public void Step()
    {
        StepCount++;
        float bc1 = 1f - MathF.Pow(Beta1, StepCount);
        float bc2 = 1f - MathF.Pow(Beta2, StepCount);
        foreach (var group in _groups)
        {
            float lr = LearningRate * group.LearningRateScale;
            float decay = group.WeightDecay ?? WeightDecay;
            foreach (var p in group.Parameters)
            {
                if (p.Grad == null) continue;
                if (!_state.TryGetValue(p, out var s))
                {
                    s = (NewMoment(p, zeroed: true), NewMoment(p, zeroed: true));
                    _state[p] = s;
                }
                Backend.Of(p).AdamWStep(p, p.Grad, s.M, s.V, lr, Beta1, Beta2, Eps, decay, bc1, bc2);
            }
        }
    }

    /// <summary>Drops every parameter's gradient (set to none), ready for the next accumulation.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters) p.ZeroGrad();
    }

    /// <inheritdoc />
    public void WriteState(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write("AdamW");
        writer.Write(StateFormat);
        writer.Write(StepCount);
        foreach (var p in Parameters)
        {
            bool has = _state.TryGetValue(p, out var s);
            writer.Write(has);
            writer.Write(p.Count);
            if (!has) continue;
            writer.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(s.M.AsSpan()));
            writer.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(s.V.AsSpan()));
        }
    }

    /// <inheritdoc />
    public void ReadState(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        string kind = reader.ReadString();
        int format = reader.ReadInt32();
        if (kind != "AdamW" || format != StateFormat)
            throw new InvalidDataException($"Optimizer state is '{kind}' format {format}; this optimizer is AdamW format {StateFormat}.");
        StepCount = reader.ReadInt32();
        int index = 0;
        foreach (var p in Parameters)
        {
            bool has = reader.ReadBoolean();
            long count = reader.ReadInt64();
            if (count != p.Count)
                throw new InvalidDataException($"Optimizer state for parameter {index} ({p.DescribeForError()}) holds {count} values; the parameter has {p.Count}.");
            if (has)
            {
                if (!_state.TryGetValue(p, out var s))
                    _state[p] = s = (NewMoment(p, zeroed: false), NewMoment(p, zeroed: false));
                reader.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(s.M.AsSpan()));
                reader.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(s.V.AsSpan()));
            }
            index++;
        }
    }

    /// <summary>A moment buffer shaped like <paramref name="p"/>, owned by this optimizer (paged memory is always zeroed).</summary>
    private Tensor NewMoment(Tensor p, bool zeroed) =>
        Paged ? PagedMemory.Zeros(p.ShapeArray) : Tensor.Create(p.ShapeArray, DType.Float32, zeroed, scoped: false);

    /// <summary>Releases the moment buffers.</summary>
    public void Dispose()
    {
        foreach (var (m, v) in _state.Values)
        {
            m.Dispose();
            v.Dispose();
        }
        _state.Clear();
    }
}
