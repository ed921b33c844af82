using System.Diagnostics;
using System.Text.Json.Nodes;

namespace PeftGen.Benchmarks;

/// <summary>
/// <c>quickstart</c>: wall time of the README's main command, <c>dotnet run -c Release --project samples/QuickStart</c>,
/// as a user runs it (a first run that builds, then a run on the built project), against the 3-minute budget on 2 cores.
/// </summary>
internal static class QuickStartBenchmark
{
    private const double BudgetSeconds = 180;

    public static int Run(string[] args)
    {
        var options = BenchmarkArgs.Parse(args, new() { ["runs"] = "2" });
        string root = RepositoryRoot();
        int runs = int.Parse(options["runs"], System.Globalization.CultureInfo.InvariantCulture);
        for (int run = 1; run <= runs; run++)
        {
            var watch = Stopwatch.StartNew();
            var info = new ProcessStartInfo("dotnet", ["run", "-c", "Release", "--project", Path.Combine(root, "samples", "QuickStart")])
            {
                WorkingDirectory = Path.Combine(Path.GetTempPath(), "peftgen-quickstart-bench"),
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            Directory.CreateDirectory(info.WorkingDirectory);
            using var process = Process.Start(info)!;
            var stderr = process.StandardError.ReadToEndAsync();
            string stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            double seconds = watch.Elapsed.TotalSeconds;
            if (process.ExitCode != 0)
                return BenchmarkArgs.Fail($"the QuickStart exited with {process.ExitCode}:\n{stdout}\n{stderr.Result}");
            string? reported = stdout.Split('\n').LastOrDefault(l => l.StartsWith("Done in", StringComparison.Ordinal));
            Console.WriteLine(new JsonObject
            {
                ["benchmark"] = "quickstart_wall_time",
                ["run"] = run,
                ["wall_s"] = Math.Round(seconds, 2),
                ["quickstart_reported"] = reported?.Trim(),
                ["budget_s"] = BudgetSeconds,
                ["fraction_of_budget"] = Math.Round(seconds / BudgetSeconds, 3),
                ["cores"] = Environment.ProcessorCount,
            }.ToJsonString());
        }
        return 0;
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PeftGen.sln"))) return dir.FullName;
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PeftGen.sln"))) return dir.FullName;
        throw new InvalidOperationException("quickstart benchmark: run it from inside the PeftGen repository (PeftGen.sln not found above the current folder).");
    }
}
