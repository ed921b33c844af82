namespace PeftGen.Tensors;

/// <summary>
/// Builds models without memory for their weights (accelerate's <c>init_empty_weights</c>, PyTorch's meta device): while
/// a scope is open on this thread, every CPU tensor created has a shape and no memory (<see cref="Tensor.IsEmpty"/>), and
/// the factories skip their initialisation. A loader then gives each parameter its memory as it reads it, in the type it
/// is kept in (4-bit, 16-bit or float32), so the float32 model is never built. Only module construction belongs in the
/// scope: a tensor computed there has no values.
/// </summary>
internal static class EmptyWeights
{
    [ThreadStatic] private static int t_depth;

    /// <summary>True while a scope is open on this thread.</summary>
    public static bool IsActive => t_depth > 0;

    /// <summary>Opens a scope on this thread; dispose it to allocate normally again.</summary>
    public static IDisposable Scope()
    {
        t_depth++;
        return new Closer();
    }

    private sealed class Closer : IDisposable
    {
        private bool _closed;

        public void Dispose()
        {
            if (_closed) return;
            _closed = true;
            t_depth--;
        }
    }
}
