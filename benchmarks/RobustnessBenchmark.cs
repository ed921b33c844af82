using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftGen.Fuzz;

namespace PeftGen.Benchmarks;

/// <summary>
/// Robustness of the parsers that take user files: runs the fuzz harness of the tests
/// (tests/PeftGen.Runtime.Tests/Fuzz/ParserFuzz.cs, linked into this project) with more random mutations per parser and
/// prints one JSON line per parser. Exit code 1 when any input crashed, hung or allocated beyond the bound.
/// </summary>
internal static class RobustnessBenchmark
{
    public static int Run(string[] args)
    {
        Dictionary<string, string> options;
        try
        {
            options = BenchmarkArgs.Parse(args, new() { ["inputs"] = "2000", ["seed"] = "1", ["parsers"] = string.Join(",", ParserFuzz.TargetNames), ["shared"] = "" });
        }
        catch (ArgumentException e)
        {
            return BenchmarkArgs.Fail(e.Message);
        }
        int inputs = int.Parse(options["inputs"], System.Globalization.CultureInfo.InvariantCulture);
        int seed = int.Parse(options["seed"], System.Globalization.CultureInfo.InvariantCulture);
        string? stories = options["shared"] is { Length: > 0 } shared ? Path.Combine(shared, "models", "stories260K") : FindStories260K();
        string work = Path.Combine(Path.GetTempPath(), $"peftgen-robustness-{Guid.NewGuid():N}");
        int failed = 0;
        try
        {
            foreach (var name in options["parsers"].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var target = ParserFuzz.Target(name, Path.Combine(work, "seeds", name), stories);
                if (target is null)
                {
                    Console.Error.WriteLine($"{name}: skipped (needs shared/models/stories260K; pass --shared DIR)");
                    continue;
                }
                var watch = Stopwatch.StartNew();
                var stats = ParserFuzz.RunRandom(target, inputs, seed, work, failure => Console.Error.WriteLine(failure));
                watch.Stop();
                failed += stats.Failed;
                Console.WriteLine(new JsonObject
                {
                    ["parser"] = stats.Parser, ["tried"] = stats.Tried, ["rejected"] = stats.Rejected, ["accepted"] = stats.Accepted,
                    ["crashed"] = stats.Crashed, ["hangs"] = stats.Hangs, ["over_allocation"] = stats.OverAllocation,
                    ["max_alloc_bytes"] = stats.MaxAllocBytes, ["seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 2),
                }.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
            }
        }
        finally
        {
            try
            {
                Directory.Delete(work, recursive: true);
            }
            catch (IOException)
            {
                // A hung parse may still hold a file.
            }
        }
        return failed == 0 ? 0 : 1;
    }

    /// <summary>The shared stories260K folder beside the repository (as the tests find it), or null.</summary>
    private static string? FindStories260K()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "shared", "models", "stories260K");
                if (File.Exists(Path.Combine(candidate, "stories260K.bin"))) return candidate;
            }
        return null;
    }
}
