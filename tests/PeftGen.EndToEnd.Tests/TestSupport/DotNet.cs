using System.Diagnostics;
using System.Text;

namespace PeftGen.EndToEnd.Tests.TestSupport;

/// <summary>A finished dotnet command: its command line, exit code, and standard output and error interleaved.</summary>
internal sealed record CommandResult(string CommandLine, int ExitCode, string Output)
{
    /// <summary>The whole transcript, for assertion messages.</summary>
    public override string ToString() => $"$ {CommandLine}\n(exit code {ExitCode})\n{Output}";
}

/// <summary>Runs the dotnet CLI as a user would from a fresh shell.</summary>
internal static class DotNet
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Arguments for dotnet build that leave no MSBuild node or compiler server behind: a lingering server would outlive
    /// the test run, keep CI's process tree alive and hold files open.
    /// </summary>
    public static readonly string[] NoBuildServers = ["-nodeReuse:false", "-p:UseSharedCompilation=false"];

    /// <summary>The same dotnet that runs the tests (the CLI sets DOTNET_HOST_PATH for everything it starts).</summary>
    private static string Executable => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";

    /// <summary>Runs <c>dotnet</c> with <paramref name="arguments"/> in <paramref name="workingDirectory"/> and waits for it.</summary>
    public static CommandResult Run(string workingDirectory, params string[] arguments) =>
        RunProcess(Executable, "dotnet", workingDirectory, arguments);

    /// <summary>Runs a program a publish made (a native executable) in <paramref name="workingDirectory"/> and waits for it.</summary>
    public static CommandResult RunProgram(string executable, string workingDirectory, params string[] arguments) =>
        RunProcess(executable, executable, workingDirectory, arguments);

    private static CommandResult RunProcess(string fileName, string displayName, string workingDirectory, string[] arguments)
    {
        var start = new ProcessStartInfo(fileName)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        // Under 'dotnet test' the environment carries the outer MSBuild's settings (SDK paths, node modes); a user's
        // shell does not, and they would steer the inner build.
        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(name);
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["DOTNET_CLI_UI_LANGUAGE"] = "en";

        var output = new StringBuilder();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        string commandLine = $"{displayName} {string.Join(' ', arguments)}";
        if (!process.WaitForExit(Timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"'{commandLine}' did not finish in {Timeout.TotalMinutes} minutes. Output so far:\n{output}");
        }
        process.WaitForExit(); // the timed wait returns before the output readers have drained; this one waits for them
        lock (output) return new CommandResult(commandLine, process.ExitCode, output.ToString());

        void Append(string? line)
        {
            if (line == null) return;
            lock (output) output.AppendLine(line);
        }
    }
}
