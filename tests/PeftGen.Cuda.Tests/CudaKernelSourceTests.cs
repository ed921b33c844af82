using System.Text.RegularExpressions;
using PeftGen.Backends.Cuda;
using Xunit;

namespace PeftGen.Tests.Cuda;

/// <summary>The embedded .cu sources: present, complete, and declaring exactly the kernels the host launches.</summary>
public sealed partial class CudaKernelSourceTests
{
    [GeneratedRegex(@"extern\s+""C""\s+__global__\s+void\s+(\w+)\s*\(")]
    private static partial Regex KernelDeclaration();

    [Fact]
    public void Every_module_and_the_prelude_are_embedded()
    {
        var embedded = CudaKernelSources.EmbeddedFileNames().ToHashSet();
        Assert.Contains(CudaKernelSources.CommonFileName, embedded);
        foreach (var module in Enum.GetValues<CudaModule>())
            Assert.Contains(CudaKernelSources.FileName(module), embedded);
        Assert.Equal(Enum.GetValues<CudaModule>().Length + 1, embedded.Count);
    }

    [Fact]
    public void Each_launched_kernel_is_declared_extern_C_global_in_its_module_and_nothing_else_is()
    {
        foreach (var module in Enum.GetValues<CudaModule>())
        {
            string text = CudaKernelSources.ReadFile(CudaKernelSources.FileName(module));
            var declared = KernelDeclaration().Matches(text).Select(m => m.Groups[1].Value).ToList();
            Assert.Equal(declared.Distinct().Count(), declared.Count);
            Assert.Equal(CudaKernelSources.KernelNames(module).Order(), declared.Order());
        }
    }

    [Fact]
    public void Kernel_names_are_unique_across_modules()
    {
        var all = Enum.GetValues<CudaModule>().SelectMany(CudaKernelSources.KernelNames).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
    }

    [Fact]
    public void Compiled_source_is_the_prelude_then_the_module_and_includes_no_system_headers()
    {
        foreach (var module in Enum.GetValues<CudaModule>())
        {
            string source = CudaKernelSources.Source(module);
            Assert.StartsWith(CudaKernelSources.ReadFile(CudaKernelSources.CommonFileName), source);
            Assert.Contains($"#line 1 \"{CudaKernelSources.FileName(module)}\"", source);
            Assert.DoesNotContain("#include", source);
            Assert.Equal(source.Count(c => c == '{'), source.Count(c => c == '}'));
            Assert.Equal(source.Count(c => c == '('), source.Count(c => c == ')'));
        }
    }

    [Fact]
    public void Quantization_kernels_use_the_cpu_layout_high_nibble_first_and_256_block_groups()
    {
        // The CPU layout (QuantizedWeight): element 2i in the high nibble, double-quant groups of 256 blocks.
        Assert.Equal(256, PeftGen.Quantization.QuantizedWeight.DoubleQuantBlockSize);
        string text = CudaKernelSources.ReadFile("quant4bit.cu");
        Assert.Contains("int code = (e & 1) ? (byte & 0xF) : (byte >> 4);", text);
        Assert.Contains("w.absmaxScales[block >> 8]", text);
        Assert.Contains("out[e] = w.code16[byte >> 4] * scale;", text);
    }
}
