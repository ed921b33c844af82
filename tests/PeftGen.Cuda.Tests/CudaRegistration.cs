using System.Runtime.CompilerServices;
using PeftGen.Backends;
using PeftGen.Backends.Cuda;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>
/// Registers the CUDA backend when this test assembly loads, as a program calls <see cref="CudaSupport.Register"/> at
/// start-up, so tensors, ops and optimizers on CUDA devices reach it through the runtime's device seam.
/// </summary>
internal static class CudaTestSetup
{
    [ModuleInitializer]
    internal static void Register() => CudaSupport.Register();
}

/// <summary>The registration seam, seen from a program that registered PeftGen.Cuda.</summary>
public sealed class CudaRegistrationTests
{
    [Fact]
    public void Register_is_idempotent_and_serves_cuda_devices()
    {
        CudaSupport.Register();
        CudaSupport.Register();
        Assert.True(DeviceBackends.IsRegistered(DeviceType.Cuda));
        Assert.True(DeviceBackends.IsRegistered(DeviceType.Cpu));
        Assert.Same(CudaDeviceProvider.Instance, DeviceBackends.Provider(new Device(DeviceType.Cuda, 0)));
    }

    [Fact]
    public void Another_provider_for_cuda_is_refused()
    {
        var e = Assert.Throws<InvalidOperationException>(() => DeviceBackends.Register(new OtherProvider()));
        Assert.Contains("already registered", e.Message);
        Assert.Same(CudaDeviceProvider.Instance, DeviceBackends.Provider(new Device(DeviceType.Cuda, 0)));
    }

    [Fact]
    public void Registered_but_without_a_gpu_gives_the_no_cuda_device_error()
    {
        if (CudaFactAttribute.SkipReason == null) return; // a GPU machine: the CUDA facts cover it
        var e = Assert.Throws<CudaNotAvailableException>(() => Training.ComputeDevice.Resolve("cuda"));
        Assert.Contains("CUDA is not available", e.Message);
        Assert.IsAssignableFrom<DeviceNotAvailableException>(e);
    }

    [Fact]
    public void The_kernels_are_embedded_in_PeftGen_Cuda()
    {
        Assert.Equal("PeftGen.Cuda", typeof(CudaSupport).Assembly.GetName().Name);
        Assert.Contains("PeftGen.Cuda.Kernels.adamw.cu", typeof(CudaSupport).Assembly.GetManifestResourceNames());
    }

    private sealed class OtherProvider : IDeviceBackendProvider
    {
        public DeviceType Type => DeviceType.Cuda;
        public void EnsureAvailable(Device device) => throw new NotSupportedException();
        public IBackend Backend(Device device) => throw new NotSupportedException();
        public TensorStorage Allocate(Device device, long bytes, bool zeroed) => throw new NotSupportedException();
        public void CopyBetweenDevices(Tensor src, Tensor dst) => throw new NotSupportedException();
        public Tensor PagedZeros(Device device, int[] shape) => throw new NotSupportedException();
        public HostStorage AllocateHostVisible(Device device, long bytes, bool paged) => throw new NotSupportedException();
    }
}
