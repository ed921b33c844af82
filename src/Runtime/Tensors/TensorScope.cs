using PeftGen.Autograd;

namespace PeftGen.Tensors;

/// <summary>
/// Owns every tensor created on this thread while it is the innermost scope, and releases them all when
/// disposed: one scope per training step (or generated token) gives deterministic memory with no
/// finalizers. Tensors that must outlive the scope are handed on with <see cref="Keep"/>.
/// </summary>
/// <example><code>
/// using (TensorScope.Begin())
/// {
///     var loss = model.Loss(batch);
///     loss.Backward();
///     optimizer.Step();
/// } // activations, gradients of activations and the loss are released here
/// </code></example>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? t_current;

    private readonly List<Tensor> _owned = new();
    private readonly TensorScope? _parent;
    private readonly int _tapeMark;
    private bool _disposed;

    private TensorScope(TensorScope? parent)
    {
        _parent = parent;
        _tapeMark = Tape.Current.Count;
    }

    /// <summary>The innermost scope of this thread, or null when tensors are owned by the caller.</summary>
    internal static TensorScope? Current => t_current;

    /// <summary>Opens a scope that owns the tensors created on this thread until it is disposed.</summary>
    public static TensorScope Begin() => t_current = new TensorScope(t_current);

    /// <summary>
    /// Moves <paramref name="tensor"/> out of this scope to the enclosing one (or to the caller when there is
    /// none, who must then dispose it) and returns it.
    /// </summary>
    public Tensor Keep(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (_owned.Remove(tensor)) _parent?._owned.Add(tensor);
        return tensor;
    }

    internal static void Register(Tensor tensor) => t_current?._owned.Add(tensor);

    /// <summary>Releases every tensor the scope still owns and drops their autograd records.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (t_current != this)
            throw new InvalidOperationException("TensorScopes must be disposed in the reverse order they were begun, on the thread that began them.");
        t_current = _parent;
        Tape.Current.Truncate(_tapeMark);
        foreach (var tensor in _owned) tensor.Dispose();
        _owned.Clear();
    }
}
