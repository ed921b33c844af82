using PeftGen.Backends;
using PeftGen.Nn;
using PeftGen.Tensors;

namespace PeftGen.Training;

/// <summary>
/// The one place where a requested device is checked and a model is put on it, for training (the fine-tuning facade,
/// <c>peftgen train --device</c>) and generation (<c>peftgen generate --device</c>).
/// </summary>
public static class ComputeDevice
{
    /// <summary>Parses a device name ("cpu", "cuda", "cuda:N") and checks that it can be used.</summary>
    /// <param name="name">The device name, as given to <c>--device</c>.</param>
    /// <returns>The device.</returns>
    /// <exception cref="FormatException">The name is not a device.</exception>
    /// <exception cref="DeviceNotAvailableException">
    /// A GPU was asked for and cannot be used: its backend is not registered (the message names the package and the call), or
    /// it found no library, driver or device (PeftGen.Cuda's <c>CudaNotAvailableException</c>: the message lists what was
    /// searched).
    /// </exception>
    public static Device Resolve(string name) => Require(Device.Parse(name));

    /// <summary>Returns <paramref name="device"/> when models can run on it.</summary>
    /// <param name="device">The requested device.</param>
    /// <returns>The device.</returns>
    /// <exception cref="DeviceNotAvailableException">
    /// A GPU was asked for and its backend is not registered (the message names the package and the call to make), or the
    /// CUDA libraries, driver or device are missing (PeftGen.Cuda's <c>CudaNotAvailableException</c>: the message says what
    /// was searched and what to install or set).
    /// </exception>
    public static Device Require(Device device)
    {
        if (device.Type == DeviceType.Cpu) return device;
        DeviceBackends.Provider(device).EnsureAvailable(device);
        return device;
    }

    /// <summary>
    /// Moves <paramref name="model"/>'s parameters (base, adapters) onto <paramref name="device"/> for training, like
    /// PyTorch's <c>model.to(device)</c>. 4-bit layers keep their packed codes on the host; the CUDA backend uploads
    /// them once on first use. Nothing happens on the CPU.
    /// </summary>
    /// <param name="model">The model, with its adapters already applied.</param>
    /// <param name="device">A device returned by <see cref="Require"/>.</param>
    public static void Place(Module model, Device device)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (device.Type == DeviceType.Cpu) return;
        foreach (var (_, parameter) in model.NamedParameters()) parameter.MoveTo(device);
    }

    /// <summary>Checks that text generation can run on <paramref name="device"/>.</summary>
    /// <param name="device">The requested device.</param>
    /// <returns>The device.</returns>
    /// <exception cref="DeviceNotAvailableException">
    /// A CUDA device: generation keeps its KV cache in host memory, so it runs on the CPU only for now (training runs
    /// on CUDA; generate on the CPU with the saved adapter).
    /// </exception>
    public static Device RequireForGeneration(Device device)
    {
        if (device.Type == DeviceType.Cpu) return device;
        Require(device);
        throw new DeviceNotAvailableException(
            $"Generation on '{device}' is not available: the KV cache lives in host memory, so generation runs on the CPU only for now. Use --device cpu (training does run on CUDA).");
    }
}
