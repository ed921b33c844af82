namespace PeftGen.Backends;

/// <summary>
/// A device was asked for that cannot be used here: its backend package is not registered (the message names the package
/// and the call to make), or the backend found no library, driver or device (the message says what was searched and what
/// to install or set). Backends derive their own exception from it (PeftGen.Cuda's <c>CudaNotAvailableException</c>), so
/// one <c>catch</c> covers every device.
/// </summary>
public class DeviceNotAvailableException : Exception
{
    /// <summary>Creates the exception with a full explanation.</summary>
    /// <param name="message">What is missing and what to do.</param>
    public DeviceNotAvailableException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception with a full explanation and the failure that caused it.</summary>
    /// <param name="message">What is missing and what to do.</param>
    /// <param name="innerException">The error behind it.</param>
    public DeviceNotAvailableException(string message, Exception innerException) : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with a generic message.</summary>
    public DeviceNotAvailableException() : base("The device is not available on this machine.")
    {
    }
}
