using System.CommandLine;

namespace PeftGen.Cli;

/// <summary>The peftgen command tree. stdout carries only results; progress and diagnostics go to stderr.</summary>
internal static class CliApp
{
    public static RootCommand CreateRoot() => new("peftgen: fine-tune and run Llama-family models from .NET.")
    {
        GenerateCommand.Create(),
    };

    /// <summary>Parses and runs; usage errors print to stderr and return <see cref="CliErrors.Usage"/>.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        var parse = CreateRoot().Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors) Console.Error.WriteLine($"error: {error.Message}");
            Console.Error.WriteLine("Run 'peftgen --help' for usage.");
            return CliErrors.Usage;
        }
        return await parse.InvokeAsync();
    }
}
