namespace PeftGen.Methods;

/// <summary>
/// The scope that <c>DisableAdapters()</c> of every method's model returns: disposing it runs the restoring action once
/// (a second dispose does nothing, so <c>using</c> plus an explicit dispose is safe).
/// </summary>
internal sealed class Restore(Action action) : IDisposable
{
    private Action? _action = action;

    /// <summary>Runs the action the first time; later calls do nothing.</summary>
    public void Dispose()
    {
        _action?.Invoke();
        _action = null;
    }
}
