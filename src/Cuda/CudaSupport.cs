using PeftGen.Tensors;

namespace PeftGen.Backends.Cuda;

/// <summary>
/// Adds the CUDA backend to a program: call <see cref="Register"/> once at start-up, before the first CUDA device is
/// used; then <c>ComputeDevice.Resolve("cuda")</c>, <c>Tensor.To(device)</c>, the ops and the optimizers run on the GPU.
/// The PeftGen runtime holds no CUDA code and finds no backend by itself (no reflection, no module initializer), so a
/// program that never calls it stays free of native code, and one that does keeps trimming and NativeAOT working.
/// </summary>
/// <example>
/// <code>
/// using PeftGen.Backends.Cuda;
/// using PeftGen.Training;
///
/// CudaSupport.Register();
/// var device = ComputeDevice.Resolve("cuda:0"); // throws CudaNotAvailableException naming what was searched when there is no GPU
/// </code>
/// </example>
public static class CudaSupport
{
    /// <summary>
    /// Registers the CUDA backend for <see cref="DeviceType.Cuda"/> devices. Cheap and idempotent: nothing is loaded until a
    /// CUDA device is used, so it may be called on machines without a GPU (asking for CUDA there fails with
    /// <see cref="CudaNotAvailableException"/>, which lists the folders searched).
    /// </summary>
    public static void Register() => DeviceBackends.Register(CudaDeviceProvider.Instance);
}

/// <summary>What the runtime asks of the CUDA backend through its device seam (<see cref="IDeviceBackendProvider"/>).</summary>
internal sealed class CudaDeviceProvider : IDeviceBackendProvider
{
    public static CudaDeviceProvider Instance { get; } = new();

    private CudaDeviceProvider()
    {
    }

    public DeviceType Type => DeviceType.Cuda;

    public void EnsureAvailable(Device device) => CudaDevices.EnsureAvailable(device.Index);

    public IBackend Backend(Device device) => CudaBackend.For(device);

    public TensorStorage Allocate(Device device, long bytes, bool zeroed) => CudaStorage.Allocate(device, bytes, zeroed);

    public void CopyBetweenDevices(Tensor src, Tensor dst) => CudaStorage.CopyBetweenDevices(src, dst);

    public Tensor PagedZeros(Device device, int[] shape) => CudaPagedMemory.Zeros(device, shape);

    public HostStorage AllocateHostVisible(Device device, long bytes, bool paged) => CudaHostVisibleStorage.Allocate(device, bytes, paged);
}
