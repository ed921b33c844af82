using PeftGen.Tensors;

namespace PeftGen.Backends.Cuda;

/// <summary>
/// Turns a device setting ("cpu", "cuda", "cuda:1"; the CLI's <c>--device</c>) into a <see cref="Device"/> that is known to
/// work: a CUDA device is checked (libraries found and loaded, driver initialised, ordinal present) before it is returned.
/// </summary>
public static class DeviceSelection
{
    /// <summary>Parses and checks a device setting.</summary>
    /// <param name="text">"cpu", "cuda" (device 0) or "cuda:N".</param>
    /// <returns>The device.</returns>
    /// <exception cref="FormatException">The text names no device.</exception>
    /// <exception cref="CudaNotAvailableException">A CUDA device was asked for and is not usable here; the message says why and what was searched.</exception>
    public static Device Parse(string text)
    {
        var device = Device.Parse(text);
        if (device.Type == DeviceType.Cuda) CudaDevices.EnsureAvailable(device.Index);
        return device;
    }

    /// <summary>Whether <paramref name="device"/> can be used now, with the reason when not.</summary>
    /// <param name="device">The device to check.</param>
    /// <param name="reason">Why it cannot be used (null when it can).</param>
    /// <returns>True when usable.</returns>
    public static bool IsAvailable(Device device, out string? reason)
    {
        reason = null;
        if (device.Type == DeviceType.Cpu) return true;
        try
        {
            CudaDevices.EnsureAvailable(device.Index);
            return true;
        }
        catch (CudaException e)
        {
            reason = e.Message;
        }
        catch (CudaNotAvailableException e)
        {
            reason = e.Message;
        }
        return false;
    }
}
