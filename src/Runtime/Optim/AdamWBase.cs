using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>
/// What every AdamW variant shares: parameter groups and their validation, the hyperparameters, the step loop
/// (bias corrections, per-group learning rate and decay, skipping parameters without a gradient), lazily created
/// per-parameter moments, and the checkpoint format around them. Variants decide how moments are stored and updated.
/// </summary>
public abstract class AdamWBase : IOptimizer
{
    private readonly List<ParameterGroup> _groups;
    private readonly Dictionary<Tensor, OptimizerMoments> _state = new(ReferenceEqualityComparer.Instance);

    /// <summary>Validates the settings and parameters (all must require gradients).</summary>
    private protected AdamWBase(IEnumerable<ParameterGroup> groups, float learningRate, float beta1, float beta2, float eps,
        float weightDecay, bool paged)
    {
        ArgumentNullException.ThrowIfNull(groups);
        if (!(learningRate >= 0)) throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "must be ≥ 0");
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "must be in [0, 1)");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "must be in [0, 1)");
        if (!(eps > 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "must be > 0");
        if (!(weightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "must be ≥ 0");
        _groups = groups.ToList();
        foreach (var p in _groups.SelectMany(g => g.Parameters))
        {
            if (!p.RequiresGrad)
                throw new ArgumentException($"{GetType().Name} was given {p.DescribeForError()}, which does not require gradients (a frozen parameter).", nameof(groups));
            if (p.Device.Type == DeviceType.Cpu && !p.IsContiguous)
                throw new ArgumentException($"{GetType().Name} updates contiguous tensors; {p.DescribeForError()} is a strided view.", nameof(groups));
        }
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
    /// True when the state lives in memory-mapped temporary files (QLoRA's paged optimizers, on the host): the OS
    /// may write cold state to disk under memory pressure instead of the process running out of memory.
    /// </summary>
    public bool Paged { get; }

    /// <summary>Updates taken so far (t in the bias corrections).</summary>
    public int StepCount { get; private set; }

    /// <summary>The parameter groups.</summary>
    public IReadOnlyList<ParameterGroup> Groups => _groups;

    /// <summary>Every parameter the optimizer updates.</summary>
    public IEnumerable<Tensor> Parameters => _groups.SelectMany(g => g.Parameters);

    /// <summary>Bytes of optimizer state held now.</summary>
    public long StateBytes => _state.Values.Sum(s => s.Bytes);

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
                if (!_state.TryGetValue(p, out var moments)) _state[p] = moments = CreateMoments(p);
                Update(p, p.Grad, moments, lr, decay, bc1, bc2);
            }
        }
        FlushUpdates(bc1, bc2);
    }

    /// <summary>Runs updates that <see cref="Update"/> deferred to batch them (one launch for a GPU's tensors).</summary>
    private protected virtual void FlushUpdates(float bc1, float bc2)
    {
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
        writer.Write(StateKind);
        writer.Write(StateFormat);
        writer.Write(StepCount);
        WriteLayout(writer);
        foreach (var p in Parameters)
        {
            bool has = _state.TryGetValue(p, out var moments);
            writer.Write(has);
            writer.Write(p.Count);
            if (!has) continue;
            writer.Flush();
            moments!.Write(writer.BaseStream);
        }
    }

    /// <inheritdoc />
    public void ReadState(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        string kind = reader.ReadString();
        int format = reader.ReadInt32();
        if (kind != StateKind || format != StateFormat)
            throw new InvalidDataException($"Optimizer state is '{kind}' format {format}; this optimizer is {StateKind} format {StateFormat}.");
        int stepCount = reader.ReadInt32();
        ReadLayout(reader);
        StepCount = stepCount;
        int index = 0;
        foreach (var p in Parameters)
        {
            bool has = reader.ReadBoolean();
            long count = reader.ReadInt64();
            if (count != p.Count)
                throw new InvalidDataException($"Optimizer state for parameter {index} ({p.DescribeForError()}) holds {count} values; the parameter has {p.Count}.");
            if (has)
            {
                if (!_state.TryGetValue(p, out var moments)) _state[p] = moments = CreateMoments(p);
                moments.Read(reader.BaseStream);
            }
            index++;
        }
    }

    /// <summary>Releases the state buffers (and deletes their files when paged).</summary>
    public void Dispose()
    {
        foreach (var s in _state.Values) s.Dispose();
        _state.Clear();
        GC.SuppressFinalize(this);
    }

    /// <summary>Name written at the head of the checkpointed state ("AdamW", "AdamW8bit").</summary>
    private protected abstract string StateKind { get; }

    /// <summary>Version of the state layout.</summary>
    private protected virtual int StateFormat => 1;

    /// <summary>Writes settings the state's layout depends on (block sizes), checked on read.</summary>
    private protected virtual void WriteLayout(BinaryWriter writer) { }

    /// <summary>Reads and checks what <see cref="WriteLayout"/> wrote.</summary>
    private protected virtual void ReadLayout(BinaryReader reader) { }

    /// <summary>Zeroed moments for <paramref name="p"/>.</summary>
    private protected abstract OptimizerMoments CreateMoments(Tensor p);

    /// <summary>One AdamW update of <paramref name="p"/> in place.</summary>
    private protected abstract void Update(Tensor p, Tensor grad, OptimizerMoments moments, float lr, float weightDecay, float bc1, float bc2);
}
