using PeftGen.Tensors;

namespace PeftGen.Nn;

/// <summary>
/// A building block of a model, like PyTorch's <c>nn.Module</c>: it owns parameters and child modules
/// registered under PyTorch-style names, so every parameter has a path such as
/// <c>model.layers.0.self_attn.q_proj.weight</c> that state dicts and adapter files use. Registration is
/// explicit (no reflection), which keeps modules trimming- and NativeAOT-safe.
/// </summary>
public abstract class Module : IDisposable
{
    private readonly List<(string Name, Module Module)> _children = new();
    private readonly List<(string Name, Tensor Tensor)> _parameters = new();
    private bool _disposed;

    /// <summary>True in training mode (dropout active), false in evaluation mode.</summary>
    public bool IsTraining { get; private set; } = true;

    /// <summary>Registers a child module under <paramref name="name"/> and returns it.</summary>
    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        ArgumentNullException.ThrowIfNull(module);
        EnsureNewName(name);
        _children.Add((name, module));
        return module;
    }

    /// <summary>
    /// Registers <paramref name="tensor"/> as a parameter named <paramref name="name"/> and returns it. The module
    /// owns it from now on (it leaves any <see cref="TensorScope"/>) and disposes it with itself.
    /// </summary>
    protected Tensor RegisterParameter(string name, Tensor tensor, bool trainable = true)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        EnsureNewName(name);
        tensor.AsParameter(trainable);
        tensor.Name = name;
        _parameters.Add((name, tensor));
        return tensor;
    }

    /// <summary>
    /// Replaces the module at dotted <paramref name="path"/> (for example <c>model.layers.0.self_attn.q_proj</c>)
    /// and returns the one it replaced. This is how adapters and quantization wrap layers. The parent must
    /// accept the replacement's type (a projection accepts any <see cref="LinearBase"/>).
    /// </summary>
    public Module ReplaceModule(string path, Module replacement)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(replacement);
        int dot = path.LastIndexOf('.');
        var parent = dot < 0 ? this : GetModule(path[..dot]);
        string name = path[(dot + 1)..];
        int i = parent._children.FindIndex(c => c.Name == name);
        if (i < 0) throw new KeyNotFoundException($"No module at '{path}': {parent.GetType().Name} has no child '{name}'.");
        var previous = parent._children[i].Module;
        parent.OnModuleReplaced(name, replacement);
        parent._children[i] = (name, replacement);
        return previous;
    }

    /// <summary>The module at dotted <paramref name="path"/> ("" for this one).</summary>
    public Module GetModule(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var current = this;
        if (path.Length == 0) return current;
        foreach (var part in path.Split('.'))
        {
            var next = current._children.FirstOrDefault(c => c.Name == part).Module;
            current = next ?? throw new KeyNotFoundException($"No module at '{path}': {current.GetType().Name} has no child '{part}'.");
        }
        return current;
    }

    /// <summary>
    /// Called before child <paramref name="name"/> is replaced, so typed properties can follow. Throw
    /// <see cref="ArgumentException"/> when the replacement's type does not fit; by default children are not replaceable.
    /// </summary>
    protected virtual void OnModuleReplaced(string name, Module replacement) =>
        throw new ArgumentException($"{GetType().Name}.{name} cannot be replaced.");

    /// <summary>Removes child <paramref name="name"/> (the caller owns and disposes it).</summary>
    protected Module UnregisterModule(string name)
    {
        int i = _children.FindIndex(c => c.Name == name);
        if (i < 0) throw new KeyNotFoundException($"{GetType().Name} has no child module '{name}'.");
        var module = _children[i].Module;
        _children.RemoveAt(i);
        return module;
    }

    /// <summary>Direct children with their names.</summary>
    public IEnumerable<(string Name, Module Module)> Children() => _children;

    /// <summary>This module's own parameters (not its children's).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> OwnParameters() => _parameters;

    /// <summary>Every module in the tree with its dotted path ("" for this one), depth-first in registration order.</summary>
    public IEnumerable<(string Path, Module Module)> NamedModules(string prefix = "")
    {
        yield return (prefix, this);
        foreach (var (name, child) in _children)
            foreach (var item in child.NamedModules(Join(prefix, name)))
                yield return item;
    }

    /// <summary>Every parameter in the tree with its dotted PyTorch-style path.</summary>
    public IEnumerable<(string Path, Tensor Tensor)> NamedParameters(string prefix = "")
    {
        foreach (var (path, module) in NamedModules(prefix))
            foreach (var (name, tensor) in module._parameters)
                yield return (Join(path, name), tensor);
    }

    /// <summary>Parameters that require gradients (what an optimizer updates).</summary>
    public IEnumerable<Tensor> TrainableParameters() =>
        NamedParameters().Select(p => p.Tensor).Where(t => t.RequiresGrad);

    /// <summary>Parameter counts: (trainable, total), like PEFT's <c>print_trainable_parameters</c>.</summary>
    public (long Trainable, long Total) CountParameters()
    {
        long trainable = 0, total = 0;
        foreach (var (_, t) in NamedParameters())
        {
            total += t.Count;
            if (t.RequiresGrad) trainable += t.Count;
        }
        return (trainable, total);
    }

    /// <summary>Switches this module and its children to training mode (or evaluation mode when false).</summary>
    public void Train(bool training = true)
    {
        foreach (var (_, m) in NamedModules())
        {
            m.IsTraining = training;
            m.OnTrainingModeChanged(training);
        }
    }

    /// <summary>
    /// Called on every module of the tree after <see cref="Train"/> or <see cref="Eval"/> set its mode; a module that drives
    /// modules outside its tree (a PEFT wrapper beside its base model) passes the mode on here.
    /// </summary>
    protected virtual void OnTrainingModeChanged(bool training) { }

    /// <summary>Switches to evaluation mode (no dropout).</summary>
    public void Eval() => Train(false);

    /// <summary>Stops gradients to every parameter in the tree (the frozen base of PEFT fine-tuning).</summary>
    public void Freeze() => SetRequiresGrad(false);

    /// <summary>Lets gradients reach every parameter in the tree.</summary>
    public void Unfreeze() => SetRequiresGrad(true);

    private void SetRequiresGrad(bool value)
    {
        foreach (var (_, t) in NamedParameters())
        {
            t.RequiresGrad = value;
            if (!value) t.ZeroGrad();
        }
    }

    /// <summary>The parameters by path (the tensors themselves, not copies).</summary>
    public IReadOnlyDictionary<string, Tensor> StateDict() =>
        NamedParameters().ToDictionary(p => p.Path, p => p.Tensor, StringComparer.Ordinal);

    /// <summary>
    /// Copies values into the parameters by path. With <paramref name="strict"/>, a missing or unexpected key is an
    /// error that lists them; a shape mismatch is always an error naming the key and both shapes.
    /// </summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(state);
        var own = StateDict();
        if (strict)
        {
            var missing = own.Keys.Where(k => !state.ContainsKey(k)).ToList();
            var unexpected = state.Keys.Where(k => !own.ContainsKey(k)).ToList();
            if (missing.Count > 0 || unexpected.Count > 0)
                throw new InvalidDataException(
                    $"State dict does not match {GetType().Name}: missing [{string.Join(", ", missing)}]; unexpected [{string.Join(", ", unexpected)}].");
        }
        foreach (var (key, target) in own)
        {
            if (!state.TryGetValue(key, out var source)) continue;
            if (!source.Shape.SequenceEqual(target.Shape))
                throw new InvalidDataException($"State dict key '{key}' has shape {ShapeUtil.Format(source.Shape)}, the model expects {ShapeUtil.Format(target.Shape)}.");
            var values = source.ToArray();
            if (target.DType == DType.Float32) values.CopyTo(target.AsSpan());
            else
            {
                using var converted = Tensor.FromArray(values, target.ShapeArray);
                using var narrow = converted.To(target.DType);
                narrow.RawDataSpan().CopyTo(target.RawDataSpan());
            }
        }
    }

    /// <summary>Disposes every parameter and child module.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Dispose(true);
        foreach (var (_, t) in _parameters) t.Dispose();
        foreach (var (_, m) in _children) m.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases resources a derived module holds besides its parameters and children.</summary>
    protected virtual void Dispose(bool disposing) { }

    private void EnsureNewName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.'))
            throw new ArgumentException($"'{name}' is not a valid module or parameter name (non-empty, no dots).", nameof(name));
        if (_children.Any(c => c.Name == name) || _parameters.Any(p => p.Name == name))
            throw new ArgumentException($"{GetType().Name} already has a member named '{name}'.", nameof(name));
    }

    internal static string Join(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;
}

/// <summary>A module with a typed forward pass, like TorchSharp's <c>Module&lt;TIn, TOut&gt;</c>.</summary>
public abstract class Module<TIn, TOut> : Module
{
    /// <summary>Computes the module's output.</summary>
    public abstract TOut Forward(TIn input);
}
