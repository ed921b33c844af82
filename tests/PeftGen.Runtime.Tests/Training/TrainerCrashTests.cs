using System.Diagnostics;
using System.Globalization;
using PeftGen.CrashHost;
using PeftGen.Training;
using Xunit;

namespace PeftGen.Tests.Training;

/// <summary>
/// A real crash: a separate training process is SIGKILLed while it writes a checkpoint file. Resuming from what it
/// left on disk must give exactly the losses of an uninterrupted run.
/// </summary>
public class TrainerCrashTests
{
    private static string HostDll => Path.Combine(AppContext.BaseDirectory, "PeftGen.CrashHost.dll");

    private static (int Code, string Stdout) RunHost(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(HostDll);
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(120_000)) process.Kill();
        _ = stderr.Result;
        return (process.ExitCode, stdout);
    }

    [Fact]
    public void Killed_mid_checkpoint_the_run_resumes_exactly()
    {
        var crashed = Path.Combine(Path.GetTempPath(), $"peftgen-crash-{Guid.NewGuid():N}");
        var clean = Path.Combine(Path.GetTempPath(), $"peftgen-clean-{Guid.NewGuid():N}");
        try
        {
            // Checkpoints are three files each: the 5th write is the second file of checkpoint-6.
            var (code, _) = RunHost(crashed, "9", "5");
            Assert.NotEqual(0, code); // killed
            Assert.Equal(Path.Combine(crashed, "checkpoint-3"), Trainer.LatestCheckpoint(crashed));
            Assert.NotEmpty(Directory.GetDirectories(crashed, ".checkpoint-6.partial-*")); // the half-written attempt is still there…
            Assert.False(Directory.Exists(Path.Combine(crashed, "checkpoint-6")));         // …but never became a checkpoint

            var (resumedCode, resumedOut) = RunHost(crashed, "9");
            Assert.Equal(0, resumedCode);
            using var uninterrupted = CrashRun.Create(clean, 9);
            var expected = uninterrupted.Trainer.Train().Losses;
            var resumed = resumedOut.Trim().Split(' ').Select(s => float.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(expected, resumed);
        }
        finally
        {
            if (Directory.Exists(crashed)) Directory.Delete(crashed, recursive: true);
            if (Directory.Exists(clean)) Directory.Delete(clean, recursive: true);
        }
    }
}
