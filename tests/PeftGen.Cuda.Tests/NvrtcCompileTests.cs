using PeftGen.Backends.Cuda;
using PeftGen.Backends.Cuda.Native;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>
/// Every kernel module through the real NVRTC, which needs neither a driver nor a GPU: runs wherever NVRTC is found
/// (a GPU machine, or a CPU machine with NVRTC installed and PEFTGEN_LIBNVRTC pointing at it), skips elsewhere.
/// </summary>
public sealed class NvrtcCompileTests
{
    [Fact]
    public void Every_kernel_module_compiles_and_its_image_holds_every_kernel_the_host_launches()
    {
        try
        {
            CudaNativeLibraries.EnsureNvrtcLoaded();
        }
        catch (CudaNotAvailableException e)
        {
            Assert.Skip("NVRTC not found: " + e.Message.Split('\n')[0]);
        }
        using var log = new StringWriter();
        int failures = CudaDiagnostics.CompileKernels(log, withDevice: false);
        Assert.True(failures == 0, log.ToString());
        Assert.Contains("every kernel compiled", log.ToString());
    }
}
