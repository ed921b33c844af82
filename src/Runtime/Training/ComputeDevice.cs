using PeftGen.Backends.Cuda;
using PeftGen.Tensors;

namespace PeftGen.Training;

/// <summary>
/// The one place where a requested device is checked before a model is loaded for training or generation. Today
/// models run on the CPU only; the CUDA backend will be wired in here, and callers (the fine-tuning facade, the CLI)
/// need not change.
/// </summary>
public static class ComputeDevice
{
    /// <summary>Parses a device name ("cpu", "cuda", "cuda:N") and checks that it can be used.</summary>
    /// <param name="name">The device name, as given to <c>--device</c>.</param>
    /// <returns>The device.</returns>
    /// <exception cref="FormatException">The name is not a device.</exception>
    /// <exception cref="CudaNotAvailableException">A CUDA device was asked for; see <see cref="Require"/>.</exception>
    public static Device Resolve(string name) => Require(Device.Parse(name));

    /// <summary>Returns <paramref name="device"/> when models can run on it.</summary>
    /// <param name="device">The requested device.</param>
    /// <returns>The device.</returns>
    /// <exception cref="CudaNotAvailableException">
    /// A CUDA device was asked for: training and generation do not run on the CUDA backend yet, so the message says
    /// to use the CPU.
    /// </exception>
    public static Device Require(Device device)
    {
        if (device.Type == DeviceType.Cpu) return device;
        throw new CudaNotAvailableException(
            $"Device '{device}' is not available: PeftGen's models do not run on the CUDA backend yet. Use the CPU (--device cpu, the default).");
    }
}
