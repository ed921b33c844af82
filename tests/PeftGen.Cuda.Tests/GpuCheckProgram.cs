using PeftGen.Backends.Cuda;
using PeftGen.Benchmarks;
using PeftGen.Cli;

namespace PeftGen.Tests.Cuda;

/// <summary>
/// The entry point of this test project, which is also the GPU check's executable (scripts/gpu-bundle.sh publishes it
/// self-contained, so it runs where no .NET SDK is installed): with no command, or xunit options, it runs the tests
/// (xunit.v3's in-process runner: <c>-class</c>, <c>-method</c>, <c>-xml FILE</c>, <c>-failSkips</c>, ...); the commands
/// are the check's other steps.
/// </summary>
public static class GpuCheckProgram
{
    /// <summary>Runs a command or the tests.</summary>
    public static int Main(string[] args)
    {
        CudaSupport.Register();
        switch (args.FirstOrDefault())
        {
            case "probe":
                // The libraries, where each came from, the driver and the devices; 0 with a usable device, 3 without.
                return CudaDiagnostics.Probe(Console.Out) ? 0 : 3;
            case "compile-kernels":
                {
                    // Every module through NVRTC (for the device's architecture, else PEFTGEN_CUDA_ARCHS): 0 when all compile, 1 otherwise, 3 without NVRTC.
                    bool device = DeviceSelection.IsAvailable(new Tensors.Device(Tensors.DeviceType.Cuda, 0), out _);
                    int failures = CudaDiagnostics.CompileKernels(Console.Out, device);
                    return failures < 0 ? 3 : failures == 0 ? 0 : 1;
                }
            case "cuda-train":
                return CudaTrainBenchmark.Run(args[1..]);
            case "cuda-peft-export":
                return CudaTrainBenchmark.Export(args[1..]);
            case "peftgen":
                return CliApp.RunAsync(args[1..]).GetAwaiter().GetResult();
            case "help" or "--help":
                Console.WriteLine("""
                    usage: PeftGen.Cuda.Tests [xunit options]      run the CUDA tests (-? lists the runner's options)
                           PeftGen.Cuda.Tests probe                 CUDA libraries found and loaded (and from where), driver, devices
                           PeftGen.Cuda.Tests compile-kernels       compile every kernel with NVRTC; print each failure's log
                           PeftGen.Cuda.Tests cuda-train [...]      the GPU benchmark against transformers + PEFT (benchmarks/CudaTrainBenchmark.cs)
                           PeftGen.Cuda.Tests cuda-peft-export [...] a base, a GPU-trained adapter and logits for peers/peft_roundtrip_check.py
                           PeftGen.Cuda.Tests peftgen [...]         the peftgen CLI
                    """);
                return 0;
            default:
                return Xunit.Runner.InProc.SystemConsole.ConsoleRunner.Run(args).GetAwaiter().GetResult();
        }
    }
}
