using PeftGen.Backends.Cuda;
using PeftGen.Cli.Tests;
using PeftGen.Methods;
using PeftGen.Methods.LoRA;
using PeftGen.Quantization;
using PeftGen.IO;
using PeftGen.Tensors;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Cuda.Emulation;

/// <summary>
/// The device paths of saving, checkpoints, resuming and dropout, on the host-emulated GPU (its tensors refuse host
/// pointers as real device tensors do): <c>peftgen train --device cuda</c> must finish, write the same adapter as the CPU,
/// and resume to the same result as an uninterrupted run.
/// </summary>
[Collection(nameof(EmulatedCudaCollection))]
public sealed class EmulatedDeviceTests
{
    private static (int Code, string Stdout, string Stderr) Train(string model, string data, string output, string device, params string[] more) =>
        CliRunner.Run(["train", "--model", model, "--data", data, "--output", output, "--batch-size", "2", "--max-length", "32",
            "--rank", "4", "--lr", "1e-2", "--targets", "all-linear", "--device", device, .. more]);

    private static byte[] AdapterBytes(string output) =>
        File.ReadAllBytes(Path.Combine(output, FineTuneSession.AdapterFolderName, PeftAdapterFile.WeightsFileName));

    private static string[] Losses(string output) => File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
        .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("loss").GetRawText()).ToArray();

    [Fact]
    public void Device_tensors_refuse_host_spans_as_real_gpu_tensors_do()
    {
        using var emulated = EmulatedCudaDevice.Install();
        using var t = Tensor.FromArray([1f, 2f, 3f], [3]).To(EmulatedCudaDevice.Device);
        Assert.Equal(EmulatedCudaDevice.Device, t.Device);
        var e = Assert.Throws<InvalidOperationException>(() => t.AsSpan().ToArray());
        Assert.Contains("is on cuda:0", e.Message);
        Assert.Equal([1f, 2f, 3f], t.ToArray());
    }

    [Fact]
    public void Safetensors_saves_device_tensors_of_any_dtype_and_layout_through_a_host_copy()
    {
        using var emulated = EmulatedCudaDevice.Install();
        string dir = Path.Combine(Path.GetTempPath(), "peftgen-emulated-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var values = Enumerable.Range(0, 12).Select(i => i * 0.25f - 1f).ToArray();
            using var host = Tensor.FromArray(values, [3, 4]);
            using var gpu = host.To(EmulatedCudaDevice.Device);
            using var gpuBf16 = gpu.To(DType.BFloat16);
            var transposed = gpu.Transpose(0, 1); // a strided view on the device
            string path = Path.Combine(dir, "t.safetensors");
            Safetensors.Save(path, [("a", gpu), ("b", gpuBf16), ("c", transposed)]);
            string reference = Path.Combine(dir, "ref.safetensors");
            using var hostBf16 = host.To(DType.BFloat16);
            Safetensors.Save(reference, [("a", host), ("b", hostBf16), ("c", host.Transpose(0, 1))]);
            Assert.Equal(File.ReadAllBytes(reference), File.ReadAllBytes(path));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Dropout_on_the_device_draws_its_mask_there_from_one_seed_of_the_run_generator()
    {
        using var emulated = EmulatedCudaDevice.Install();
        var rng = new Rng(42);
        var copy = new Rng(42);
        const int N = 4096;
        const float P = 0.25f;
        using var x = Tensor.FromArray(Enumerable.Repeat(2f, N).ToArray(), [N]).To(EmulatedCudaDevice.Device);
        using var y = Ops.Dropout(x, P, rng);
        Assert.Equal(EmulatedCudaDevice.Device, y.Device);
        ulong seed = copy.NextUInt64();
        Assert.Equal(copy.State, rng.State); // exactly one draw, whatever the size: resumed runs draw the same masks
        var expected = new float[N];
        CudaDropout.Fill(expected, P, 1f / (1f - P), seed);
        var got = y.ToArray();
        for (int i = 0; i < N; i++) Assert.Equal(2f * expected[i], got[i]);
        double dropped = got.Count(v => v == 0f) / (double)N;
        Assert.InRange(dropped, P - 0.03, P + 0.03);
    }

    [Fact]
    public void Train_on_cuda_writes_the_same_adapter_and_losses_as_the_cpu()
    {
        using var root = CliRunner.TempFolder("emulated-train");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        var cpu = Train(model, data, Path.Combine(root, "cpu"), "cpu", "--steps", "4", "--dropout", "0");
        Assert.True(cpu.Code == 0, $"exit {cpu.Code}: {cpu.Stderr}");
        using (EmulatedCudaDevice.Install())
        {
            var gpu = Train(model, data, Path.Combine(root, "gpu"), "cuda", "--steps", "4", "--dropout", "0", "--save-every", "2");
            Assert.True(gpu.Code == 0, $"exit {gpu.Code}: {gpu.Stderr}");
        }
        Assert.Equal(Losses(Path.Combine(root, "cpu")), Losses(Path.Combine(root, "gpu")));
        Assert.Equal(AdapterBytes(Path.Combine(root, "cpu")), AdapterBytes(Path.Combine(root, "gpu")));
        Assert.True(Directory.Exists(Path.Combine(root, "gpu", "checkpoint-4")));

        // The adapter it wrote loads again and evaluates on the device as on the CPU (the GPU check's train step does this).
        string[] eval = ["eval", "--model", model, "--data", data, "--adapter", Path.Combine(root, "gpu", FineTuneSession.AdapterFolderName),
            "--max-length", "32", "--json"];
        var onCpu = CliRunner.Run([.. eval, "--device", "cpu"]);
        Assert.True(onCpu.Code == 0, $"exit {onCpu.Code}: {onCpu.Stderr}");
        using (EmulatedCudaDevice.Install())
        {
            var onGpu = CliRunner.Run([.. eval, "--device", "cuda"]);
            Assert.True(onGpu.Code == 0, $"exit {onGpu.Code}: {onGpu.Stderr}");
            Assert.Equal(onCpu.Stdout, onGpu.Stdout);
        }
    }

    [Fact]
    public void Train_on_cuda_with_dropout_and_qlora_resumes_to_the_uninterrupted_result()
    {
        using var root = CliRunner.TempFolder("emulated-resume");
        string model = CliRunner.TinyModelFolder(Path.Combine(root, "model"));
        string data = CliRunner.TextDataset(Path.Combine(root, "data.jsonl"));
        string whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        using (EmulatedCudaDevice.Install())
        {
            var run = Train(model, data, whole, "cuda", "--steps", "4", "--save-every", "2", "--dropout", "0.1", "--quant", "nf4", "--block-size", "32");
            Assert.True(run.Code == 0, $"exit {run.Code}: {run.Stderr}");
            // The run interrupted after its checkpoint at step 2: only that checkpoint and the metrics up to it are left.
            CopyFolder(whole, resumed);
            Directory.Delete(Path.Combine(resumed, "checkpoint-4"), recursive: true);
            Directory.Delete(Path.Combine(resumed, FineTuneSession.AdapterFolderName), recursive: true);
            var again = Train(model, data, resumed, "cuda", "--steps", "4", "--save-every", "2", "--dropout", "0.1", "--quant", "nf4", "--block-size", "32", "--resume");
            Assert.True(again.Code == 0, $"exit {again.Code}: {again.Stderr}");
            Assert.Contains("resuming from", again.Stderr);
        }
        Assert.Equal(Losses(whole), Losses(resumed));
        Assert.Equal(AdapterBytes(whole), AdapterBytes(resumed));
    }

    private static void CopyFolder(string from, string to)
    {
        foreach (var dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(dir.Replace(from, to, StringComparison.Ordinal));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, file.Replace(from, to, StringComparison.Ordinal));
    }
}
