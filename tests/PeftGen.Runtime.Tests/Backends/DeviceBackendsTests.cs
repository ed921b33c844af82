using PeftGen.Backends;
using PeftGen.Optim;
using PeftGen.Tensors;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Backends;

/// <summary>
/// The runtime without PeftGen.Cuda (this test assembly does not reference it): no CUDA code or kernel source inside, and
/// a CUDA device fails with the package to add and the call to make.
/// </summary>
public sealed class DeviceBackendsTests
{
    private static readonly Device Gpu = new(DeviceType.Cuda, 0);

    [Fact]
    public void The_runtime_assembly_holds_no_cuda_type_or_resource()
    {
        var runtime = typeof(Tensor).Assembly;
        Assert.Equal("PeftGen.Runtime", runtime.GetName().Name);
        var cudaTypes = runtime.GetTypes()
            .Where(t => (t.Namespace ?? "").Contains("Cuda", StringComparison.OrdinalIgnoreCase) || t.Name.Contains("Cuda", StringComparison.OrdinalIgnoreCase)
                || t.Name.Contains("Cublas", StringComparison.OrdinalIgnoreCase) || t.Name.Contains("Nvrtc", StringComparison.OrdinalIgnoreCase))
            .Select(t => t.FullName)
            .ToList();
        Assert.Empty(cudaTypes);
        Assert.DoesNotContain(runtime.GetManifestResourceNames(),
            name => name.Contains("Cuda", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".cu", StringComparison.Ordinal) || name.EndsWith(".cuh", StringComparison.Ordinal));
        Assert.DoesNotContain(runtime.GetReferencedAssemblies(), a => a.Name!.Contains("Cuda", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(AppDomain.CurrentDomain.GetAssemblies(), a => a.GetName().Name == "PeftGen.Cuda");
    }

    [Fact]
    public void Without_PeftGen_Cuda_a_cuda_device_names_the_package_and_the_call()
    {
        Assert.True(DeviceBackends.IsRegistered(DeviceType.Cpu));
        Assert.False(DeviceBackends.IsRegistered(DeviceType.Cuda));
        Assert.Equal(Gpu, Device.Parse("cuda")); // parsing needs no backend

        foreach (var e in new[]
        {
            Assert.Throws<DeviceNotAvailableException>(() => ComputeDevice.Resolve("cuda")),
            Assert.Throws<DeviceNotAvailableException>(() => ComputeDevice.Require(new Device(DeviceType.Cuda, 1))),
            Assert.Throws<DeviceNotAvailableException>(() => ComputeDevice.RequireForGeneration(Gpu)),
        })
        {
            Assert.Contains("PeftGen.Cuda", e.Message);
            Assert.Contains("CudaSupport.Register()", e.Message);
            Assert.Contains("--device cpu", e.Message);
        }
    }

    [Fact]
    public void Moving_a_tensor_to_an_unregistered_device_fails_and_leaves_it_usable()
    {
        using var t = Tensor.FromArray([1f, 2f, 3f], [3]);
        var e = Assert.Throws<DeviceNotAvailableException>(() => t.To(Gpu));
        Assert.Contains("CudaSupport.Register()", e.Message);
        Assert.Throws<DeviceNotAvailableException>(() => t.MoveTo(Gpu));
        Assert.Throws<DeviceNotAvailableException>(() => Tensor.Create([2], DType.Float32, zeroed: true, device: Gpu));
        Assert.Equal(Device.Cpu, t.Device);
        Assert.Equal(new[] { 1f, 2f, 3f }, t.ToArray());
    }

    [Fact]
    public void The_optimizers_run_on_the_cpu_without_a_gpu_backend()
    {
        using var p = Tensor.FromArray([1f, -2f], [2]);
        p.RequiresGrad = true;
        p.Grad = Tensor.FromArray([0.5f, 0.5f], [2]);
        using var optimizer = new AdamW([p], learningRate: 0.1f, weightDecay: 0f);
        optimizer.Step();
        Assert.Equal(new[] { 0.9f, -2.1f }, p.ToArray().Select(v => MathF.Round(v, 4)).ToArray());
    }
}
