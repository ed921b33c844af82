using System.CommandLine;
using PeftGen.Cli;

// stdout carries only results (generated text); progress and diagnostics go to stderr.
var root = new RootCommand("peftgen: fine-tune and run Llama-family models from .NET.")
{
    GenerateCommand.Create(),
};
return await root.Parse(args).InvokeAsync();
