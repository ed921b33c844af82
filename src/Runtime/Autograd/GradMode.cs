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

    /// <summary>Restores recording when disposed.</summary>
    public readonly struct NoGradScope : IDisposable
    {
        /// <summary>Ends the no-grad region.</summary>
        public void Dispose() => t_disabledDepth--;
    }
}
