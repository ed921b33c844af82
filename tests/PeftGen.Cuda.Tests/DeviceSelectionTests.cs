using PeftGen.Backends.Cuda;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>The --device setting: parsing, and the CPU-only machine's clear failure for CUDA.</summary>
public sealed class DeviceSelectionTests
{
    [Fact]
    public void Cpu_always_parses()
    {
        Assert.Equal(Device.Cpu, DeviceSelection.Parse("cpu"));
        Assert.Equal(Device.Cpu, DeviceSelection.Parse(" CPU "));
        Assert.True(DeviceSelection.IsAvailable(Device.Cpu, out var reason));
        Assert.Null(reason);
    }

    [Theory]
    [InlineData("gpu")]
    [InlineData("cuda:")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:x")]
    public void Unknown_settings_are_format_errors_naming_the_choices(string text)
    {
        var e = Assert.Throws<FormatException>(() => DeviceSelection.Parse(text));
        Assert.Contains("'cpu', 'cuda' or 'cuda:N'", e.Message);
    }

    [Fact]
    public void Cuda_without_a_device_fails_with_what_was_searched()
    {
        if (CudaFactAttribute.SkipReason == null) return; // a GPU machine: the CUDA facts cover it
        foreach (var text in new[] { "cuda", "cuda:1" })
        {
            var e = Assert.Throws<CudaNotAvailableException>(() => DeviceSelection.Parse(text));
            Assert.Contains("CUDA is not available", e.Message);
            Assert.Contains("--device cpu", e.Message);
        }
        Assert.False(DeviceSelection.IsAvailable(new Device(DeviceType.Cuda, 0), out var reason));
        Assert.Contains("CUDA is not available", reason);
        Assert.StartsWith("no CUDA device: CUDA is not available", CudaFactAttribute.SkipReason);
    }

    [CudaFact]
    public void Cuda_device_zero_parses_and_an_absent_ordinal_fails()
    {
        Assert.Equal(new Device(DeviceType.Cuda, 0), DeviceSelection.Parse("cuda"));
        var e = Assert.Throws<CudaNotAvailableException>(() => DeviceSelection.Parse("cuda:4096"));
        Assert.Contains("cuda:4096 was requested", e.Message);
    }
}
