using System.CommandLine;
using PeftGen.Backends.Cuda;

namespace PeftGen.Cli;

/// <summary>The peftgen command tree. stdout carries only results; progress and diagnostics go to stderr.</summary>
internal static class CliApp
{
    public static RootCommand CreateRoot() => new(
        "peftgen: fine-tune and run Llama-family models from .NET.\n" +
        "Exit codes: 0 success, 1 bad input (a file or setting; the message names it), 2 usage, 3 internal error, 4 device not available, 130 cancelled.")
    {
        TrainCommand.Create(),
        GenerateCommand.Create(),
        ChatCommand.Create(),
        EvalCommand.Create(),
        MergeCommand.Create(),
        InspectCommand.Create(),
        ConvertCommand.Create(),
    };

    /// <summary>
    /// Registers the CUDA backend (PeftGen.Cuda: nothing loads until --device cuda asks for it), then parses and runs;
    /// usage errors print to stderr and return <see cref="CliErrors.Usage"/>.
    /// </summary>
    public static async Task<int> RunAsync(string[] args)
    {
        CudaSupport.Register();
        var parse = CreateRoot().Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors) Console.Error.WriteLine($"error: {error.Message}");
            Console.Error.WriteLine($"Run 'peftgen {(parse.CommandResult.Command is RootCommand ? "" : parse.CommandResult.Command.Name + " ")}--help' for usage.");
            return CliErrors.Usage;
        }
        // chat handles Ctrl-C itself: it stops the reply being written, not the session.
        var invocation = parse.CommandResult.Command.Name == "chat" ? new InvocationConfiguration { ProcessTerminationTimeout = null } : null;
        return await parse.InvokeAsync(invocation);
    }
}
