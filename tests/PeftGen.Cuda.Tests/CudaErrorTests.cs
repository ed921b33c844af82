using PeftGen.Backends.Cuda;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>Status codes to exceptions, with fake codes (no driver is loaded).</summary>
public sealed class CudaErrorTests
{
    [Fact]
    public void Success_does_not_throw()
    {
        CudaErrors.Check(0, "cuInit");
        CudaErrors.CheckCublas(0, "cublasGemmEx");
        CudaErrors.CheckNvrtc(0, "nvrtcCompileProgram");
    }

    [Fact]
    public void Out_of_memory_is_its_own_exception_with_the_call_and_name()
    {
        var e = Assert.Throws<CudaOutOfMemoryException>(() => CudaErrors.Check(2, "cuMemAlloc(1,024 bytes)"));
        Assert.Equal(2, e.Code);
        Assert.Equal("CUDA_ERROR_OUT_OF_MEMORY", e.ErrorName);
        Assert.Contains("cuMemAlloc(1,024 bytes)", e.Message);
        Assert.Contains("smaller batch", e.Message);
    }

    [Theory]
    [InlineData(100, "CUDA_ERROR_NO_DEVICE")]
    [InlineData(34, "CUDA_ERROR_STUB_LIBRARY")]
    [InlineData(35, "CUDA_ERROR_INSUFFICIENT_DRIVER")]
    [InlineData(803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH")]
    public void Missing_device_or_driver_codes_mean_cuda_is_not_available(int code, string name)
    {
        var e = Assert.Throws<CudaNotAvailableException>(() => CudaErrors.Check(code, "cuInit"));
        Assert.Contains(name, e.Message);
        Assert.Contains("--device cpu", e.Message);
    }

    [Theory]
    [InlineData(700, "CUDA_ERROR_ILLEGAL_ADDRESS")]
    [InlineData(209, "CUDA_ERROR_NO_BINARY_FOR_GPU")]
    [InlineData(500, "CUDA_ERROR_NOT_FOUND")]
    public void Other_known_codes_are_named(int code, string name)
    {
        var e = Assert.Throws<CudaException>(() => CudaErrors.Check(code, "cuLaunchKernel(peft_fill_f32)"));
        Assert.Equal(name, e.ErrorName);
        Assert.Equal("CUDA driver", e.Library);
        Assert.StartsWith($"CUDA driver call cuLaunchKernel(peft_fill_f32) failed with {name} ({code}): ", e.Message);
    }

    [Fact]
    public void Unknown_codes_use_the_driver_lookup_then_a_numeric_name()
    {
        var saved = CudaErrors.DriverLookup;
        try
        {
            CudaErrors.DriverLookup = null;
            Assert.Equal("CUresult 12345", CudaErrors.DescribeDriver(12345).Name);
            CudaErrors.DriverLookup = code => code == 12345 ? ("CUDA_ERROR_FAKE", "a fake error") : (null, null);
            var (name, description) = CudaErrors.DescribeDriver(12345);
            Assert.Equal("CUDA_ERROR_FAKE", name);
            Assert.Equal("a fake error", description);
            // Known codes keep the advice of the built-in table even when the driver has its own words.
            CudaErrors.DriverLookup = _ => ("FROM_DRIVER", "driver text");
            Assert.Contains("smaller batch", CudaErrors.DescribeDriver(2).Description);
            Assert.Equal("FROM_DRIVER", CudaErrors.DescribeDriver(2).Name);
        }
        finally
        {
            CudaErrors.DriverLookup = saved;
        }
    }

    [Fact]
    public void Cublas_and_nvrtc_statuses_are_named_and_the_compiler_log_is_kept()
    {
        var oom = Assert.Throws<CudaOutOfMemoryException>(() => CudaErrors.CheckCublas(3, "cublasCreate"));
        Assert.Equal("CUBLAS_STATUS_ALLOC_FAILED", oom.ErrorName);
        var arch = Assert.Throws<CudaException>(() => CudaErrors.CheckCublas(8, "cublasGemmEx"));
        Assert.Contains("compute capability 8.0", arch.Message);
        var compile = Assert.Throws<CudaException>(() => CudaErrors.CheckNvrtc(6, "nvrtcCompileProgram(rope.cu)", "rope.cu(12): error: identifier \"x\" is undefined\n"));
        Assert.Equal("NVRTC_ERROR_COMPILATION", compile.ErrorName);
        Assert.Contains("rope.cu(12): error: identifier \"x\" is undefined", compile.Message);
        Assert.Equal("NVRTC_ERROR_99", Assert.Throws<CudaException>(() => CudaErrors.CheckNvrtc(99, "x")).ErrorName);
    }
}
