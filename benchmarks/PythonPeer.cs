using System.Diagnostics;
using System.Text.Json.Nodes;

namespace PeftGen.Benchmarks;

/// <summary>
/// Runs a PyTorch peer script from benchmarks/peers and reads the JSON line it prints. The peer runs as its users
/// would: without the OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides some machines set for old OpenBLAS builds, so its
/// OpenBLAS picks the kernels of the CPU it detects (the peer reports that core as "openblas_core").
/// </summary>
internal static class PythonPeer
{
    /// <summary>Settings that pin OpenBLAS to another CPU's kernels; removed from the peer's environment only.</summary>
    private static readonly string[] s_openBlasOverrides = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

    // Debian's python3-torch lives in the system interpreter, which may not be the python3 first on PATH.
    private static readonly string[] Interpreters = ["/usr/bin/python3", "python3"];

    public static JsonObject? Run(string script, string arguments, int threads)
    {
        string path = Path.Combine(AppContext.BaseDirectory, "peers", script);
        foreach (var python in Interpreters)
        {
            if (!HasTorch(python)) continue;
            Console.Error.WriteLine($"running PyTorch peer: {python} {script} {arguments}");
            foreach (var name in s_openBlasOverrides)
                if (Environment.GetEnvironmentVariable(name) is string value)
                    Console.Error.WriteLine($"PyTorch peer: cleared {name}={value} for the peer only (its OpenBLAS detects its own core)");
            var (code, stdout, stderr) = Exec(python, $"\"{path}\" {arguments}", threads);
            if (code != 0)
            {
                Console.Error.WriteLine($"PyTorch peer failed ({code}): {stderr}");
                return null;
            }
            var last = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault();
            var result = last == null ? null : JsonNode.Parse(last) as JsonObject;
            if (result != null && result.ContainsKey("openblas_core"))
                Console.Error.WriteLine($"PyTorch peer: OpenBLAS core {result["openblas_core"]?.ToString() ?? "unknown"} " +
                    $"({result["blas_library"]?.ToString() ?? "no OpenBLAS mapped"}; OPENBLAS_CORETYPE {result["env_coretype"]?.ToString() ?? "unset"})");
            return result;
        }
        Console.Error.WriteLine("PyTorch not found: install the peer with 'apt-get install python3-torch libopenblas0-pthread' to compare.");
        return null;
    }

    private static bool HasTorch(string python)
    {
        try
        {
            return Exec(python, "-c \"import torch\"", 1).Code == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false; // interpreter not installed
        }
    }

    private static (int Code, string Stdout, string Stderr) Exec(string file, string arguments, int threads)
    {
        var info = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        // The child's copy of the environment only: ours, the tests' and CI's keep whatever they set.
        foreach (var name in s_openBlasOverrides)
            info.Environment.Remove(name);
        // Debian's torch does its GEMMs in OpenBLAS, whose thread count is its own setting.
        foreach (var name in (string[])["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"])
            if (!info.Environment.ContainsKey(name)) info.Environment[name] = threads.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderr.Result);
    }
}
