namespace PeftGen.Autograd;

/// <summary>Whether ops are recorded for backward on this thread (PyTorch's <c>torch.no_grad()</c>).</summary>
public static class GradMode
{
    [ThreadStatic] private static int t_disabledDepth;

    /// <summary>True when differentiable ops are being recorded.</summary>
    public static bool IsEnabled => t_disabledDepth == 0;

    /// <summary>Stops recording until the returned scope is disposed (inference, evaluation, optimizer steps).</summary>
    public static NoGradScope Disable()
    {
        t_disabledDepth++;
        return new NoGradScope();
    }

    /// <summary>Records ops again until the returned scope is disposed, even inside a no-grad region (used to replay checkpointed segments).</summary>
    public static EnableScope Enable()
    {
        var scope = new EnableScope(t_disabledDepth);
        t_disabledDepth = 0;
        return scope;
    }

    /// <summary>Restores the previous no-grad depth when disposed.</summary>
    public readonly struct EnableScope : IDisposable
    {
        private readonly int _savedDepth;

        internal EnableScope(int savedDepth) => _savedDepth = savedDepth;

        /// <summary>Ends the region.</summary>
        public void Dispose() => t_disabledDepth = _savedDepth;
    }

    /// <summary>Restores recording when disposed.</summary>
    public readonly struct NoGradScope : IDisposable
    {
        /// <summary>Ends the no-grad region.</summary>
        public void Dispose() => t_disabledDepth--;
    }
}
