using PeftGen.Tensors;

namespace PeftGen.Backends;

/// <summary>
/// Which backend serves each <see cref="DeviceType"/>. The CPU's is built into the runtime; a GPU backend ships in a
/// package of its own, with its native bindings, and registers itself when the program starts, the way TorchSharp ships
/// its native backends apart: PeftGen.Cuda's <c>PeftGen.Backends.Cuda.CudaSupport.Register()</c> (the peftgen tool calls
/// it at start-up). Nothing is discovered by reflection or by loading assemblies, so trimming and NativeAOT see every
/// backend a program uses.
/// </summary>
/// <remarks>
/// Tensors created on a device, <see cref="Tensor.To(Device)"/>, <see cref="Tensor.MoveTo"/>,
/// <see cref="Training.ComputeDevice"/>, the ops (through their tensors' backend) and the optimizers ask the registry for
/// the device's backend. A device whose
/// backend is not registered fails with a <see cref="DeviceNotAvailableException"/> naming the package and the call; a
/// registered backend that finds no library, driver or device throws its own exception, derived from it.
/// </remarks>
public static class DeviceBackends
{
    private static readonly IDeviceBackendProvider?[] s_providers = new IDeviceBackendProvider?[Enum.GetValues<DeviceType>().Length];
    private static readonly IDeviceBackendProvider?[] s_overrides = new IDeviceBackendProvider?[Enum.GetValues<DeviceType>().Length]; // tests: see Override
    private static readonly Lock s_lock = new();

    /// <summary>Whether devices of <paramref name="type"/> have a backend in this program (the CPU always does).</summary>
    /// <param name="type">The device type.</param>
    /// <returns>True when tensors can be placed on such devices (if the machine has one).</returns>
    public static bool IsRegistered(DeviceType type) =>
        type == DeviceType.Cpu || (IsKnown(type) && (Volatile.Read(ref s_overrides[(int)type]) ?? Volatile.Read(ref s_providers[(int)type])) != null);

    /// <summary>
    /// Makes <paramref name="provider"/> the backend of its device type. Registering the same provider again does nothing;
    /// another provider for a type that has one is refused.
    /// </summary>
    /// <exception cref="ArgumentException">The provider is for the CPU, or for a type not in <see cref="DeviceType"/>.</exception>
    /// <exception cref="InvalidOperationException">Another provider already serves the type.</exception>
    internal static void Register(IDeviceBackendProvider provider)
    {
        ArgumentNullException.ThrowIfNull(provider);
        var type = provider.Type;
        if (type == DeviceType.Cpu || !IsKnown(type))
            throw new ArgumentException($"A backend provider can be registered for a GPU device type, not for {type}.", nameof(provider));
        lock (s_lock)
        {
            var current = s_providers[(int)type];
            if (ReferenceEquals(current, provider)) return;
            if (current != null)
                throw new InvalidOperationException($"A backend for {type} devices is already registered ({current.GetType().FullName}).");
            Volatile.Write(ref s_providers[(int)type], provider);
        }
    }

    /// <summary>
    /// Serves <paramref name="provider"/>'s device type with it until the returned scope is disposed, ahead of the registered
    /// provider (which <see cref="Register"/> still sets, and which serves again afterwards). For tests alone: PeftGen.Cuda's tests put a
    /// host-emulated GPU behind the CUDA device type to run the device paths (saving, checkpoints, the trainer) without one.
    /// </summary>
    internal static IDisposable Override(IDeviceBackendProvider provider)
    {
        ArgumentNullException.ThrowIfNull(provider);
        var type = provider.Type;
        if (type == DeviceType.Cpu || !IsKnown(type))
            throw new ArgumentException($"A backend provider can be registered for a GPU device type, not for {type}.", nameof(provider));
        IDeviceBackendProvider? previous;
        lock (s_lock)
        {
            previous = s_overrides[(int)type];
            Volatile.Write(ref s_overrides[(int)type], provider);
        }
        return new Restore(() =>
        {
            lock (s_lock) Volatile.Write(ref s_overrides[(int)type], previous);
        });
    }

    private sealed class Restore(Action restore) : IDisposable
    {
        private Action? _restore = restore;

        public void Dispose() => Interlocked.Exchange(ref _restore, null)?.Invoke();
    }

    /// <summary>The provider serving <paramref name="device"/>, which is not the CPU.</summary>
    /// <exception cref="DeviceNotAvailableException">No backend is registered for the device's type; the message says which package to add and what to call.</exception>
    internal static IDeviceBackendProvider Provider(Device device)
    {
        var provider = IsKnown(device.Type) ? Volatile.Read(ref s_overrides[(int)device.Type]) ?? Volatile.Read(ref s_providers[(int)device.Type]) : null;
        return provider ?? throw new DeviceNotAvailableException(NotRegisteredMessage(device));
    }

    /// <summary>
    /// Copies the elements of dense <paramref name="src"/> into dense <paramref name="dst"/> (same shape and dtype) across
    /// devices, through the backend of whichever of the two is not the CPU.
    /// </summary>
    /// <exception cref="ArgumentException">The tensors differ in element count or dtype, or one is a strided view.</exception>
    internal static unsafe void CopyBetweenDevices(Tensor src, Tensor dst)
    {
        var device = src.Device.Type != DeviceType.Cpu ? src.Device : dst.Device;
        if (device.Type != DeviceType.Cpu)
        {
            Provider(device).CopyBetweenDevices(src, dst);
            return;
        }
        if (src.Count != dst.Count || src.DType != dst.DType || !src.IsContiguous || !dst.IsContiguous)
            throw new ArgumentException($"A copy between devices needs two dense tensors of the same size and dtype; got {src.DescribeForError()} {src.DType} on {src.Device} and {dst.DescribeForError()} {dst.DType} on {dst.Device}.");
        long bytes = src.Count * src.DType.ElementSize();
        if (bytes > 0) Buffer.MemoryCopy(src.RawData, dst.RawData, bytes, bytes);
    }

    private static bool IsKnown(DeviceType type) => (uint)type < (uint)s_providers.Length;

    private static string NotRegisteredMessage(Device device) => device.Type switch
    {
        DeviceType.Cuda =>
            $"Device '{device}' needs the CUDA backend, which is not registered in this program: add the PeftGen.Cuda package and " +
            "call PeftGen.Backends.Cuda.CudaSupport.Register() once at start-up (the peftgen tool does). Without it, use the CPU (Device.Cpu, --device cpu).",
        _ => $"No backend is registered for device '{device}' ({device.Type}). Use the CPU (Device.Cpu, --device cpu).",
    };
}

/// <summary>
/// What a device backend package gives the runtime (internal: PeftGen.Cuda implements it through InternalsVisibleTo).
/// The provider serves every device of its <see cref="Type"/>; the CPU has none.
/// </summary>
internal interface IDeviceBackendProvider
{
    /// <summary>The device type served.</summary>
    DeviceType Type { get; }

    /// <summary>Throws unless <paramref name="device"/> can be used now (libraries found and loaded, driver initialised, ordinal present).</summary>
    /// <exception cref="DeviceNotAvailableException">It cannot; the message says why, what was searched and what to do.</exception>
    void EnsureAvailable(Device device);

    /// <summary>The kernels of <paramref name="device"/> (<see cref="Backend.Of"/> for its tensors).</summary>
    IBackend Backend(Device device);

    /// <summary>Memory for a tensor of <paramref name="bytes"/> bytes on <paramref name="device"/>, zero-filled when asked.</summary>
    TensorStorage Allocate(Device device, long bytes, bool zeroed);

    /// <summary>Copies dense <paramref name="src"/> into dense <paramref name="dst"/> (same shape and dtype), at least one of them on this provider's devices.</summary>
    void CopyBetweenDevices(Tensor src, Tensor dst);

    /// <summary>A zero-filled, unscoped float32 tensor on <paramref name="device"/> in memory the driver may page out (paged optimizer moments).</summary>
    Tensor PagedZeros(Device device, int[] shape);

    /// <summary>
    /// Zero-filled optimizer state of <paramref name="bytes"/> bytes that both the host (checkpoints) and
    /// <paramref name="device"/>'s kernels (<see cref="IOptimizerKernels.AdamW8bitStep"/>) address; paged when asked.
    /// </summary>
    HostStorage AllocateHostVisible(Device device, long bytes, bool paged);
}
