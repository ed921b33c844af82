namespace PeftGen.Backends.Cuda;

/// <summary>
/// No usable CUDA installation was found, or the driver found no device. The message lists every place that was
/// searched and what to install or set, so a user can fix it without reading the source. A
/// <see cref="DeviceNotAvailableException"/>, the runtime's exception for any device that cannot be used.
/// </summary>
public sealed class CudaNotAvailableException : DeviceNotAvailableException
{
    /// <summary>Creates the exception with a full explanation.</summary>
    /// <param name="message">What is missing, what was searched and what to do.</param>
    public CudaNotAvailableException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception with a full explanation and the failure that caused it.</summary>
    /// <param name="message">What is missing, what was searched and what to do.</param>
    /// <param name="innerException">The loader or driver error behind it.</param>
    public CudaNotAvailableException(string message, Exception innerException) : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with a generic message.</summary>
    public CudaNotAvailableException() : base("CUDA is not available on this machine.")
    {
    }

    /// <summary>Every folder or file that was looked at, in search order (empty when the failure was not a search).</summary>
    public IReadOnlyList<string> SearchedPaths { get; init; } = [];
}
