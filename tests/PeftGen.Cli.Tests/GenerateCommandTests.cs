using PeftGen.Tests.TestSupport;
using Xunit;

[assembly: CollectionBehavior(DisableTestParallelization = true)] // the tests swap Console.Out and Console.Error

namespace PeftGen.Cli.Tests;

public class GenerateCommandTests
{
    private static (int Code, string Stdout, string Stderr) Run(params string[] args) => CliRunner.Run(args);

    [StoriesFact]
    public void Greedy_generation_prints_only_the_text_on_stdout()
    {
        var (code, stdout, stderr) = Run("generate", "--model", SharedModels.Stories260KCheckpoint!, "--tokenizer", SharedModels.Stories260KTokenizer!,
            "--prompt", "", "--max-tokens", "40", "--temperature", "0");
        Assert.Equal(0, code);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily.", stdout);
        Assert.Equal(1, stdout.Count(c => c == '\n')); // the story and a final newline, nothing else
        Assert.Contains("tokens/s", stderr);
    }

    [StoriesFact]
    public void Prompt_is_included_and_sampling_is_seeded()
    {
        string[] args = ["generate", "--model", SharedModels.Stories260KCheckpoint!, "--tokenizer", SharedModels.Stories260KTokenizer!,
            "--prompt", "The dog", "--max-tokens", "30", "--temperature", "0.8", "--top-p", "0.9", "--seed", "5"];
        var first = Run(args);
        var second = Run(args);
        Assert.Equal(0, first.Code);
        Assert.StartsWith("The dog", first.Stdout);
        Assert.Equal(first.Stdout, second.Stdout);
    }

    [Fact]
    public void Missing_files_are_bad_input_naming_the_path()
    {
        var (code, stdout, stderr) = Run("generate", "--model", "/nonexistent/model.bin", "--tokenizer", "/nonexistent/tok.bin");
        Assert.Equal(1, code);
        Assert.Empty(stdout);
        Assert.Contains("/nonexistent/model.bin", stderr);
    }

    [Fact]
    public void Usage_errors_exit_with_2()
    {
        var (code, stdout, stderr) = Run("generate", "--max-tokens", "ten");
        Assert.Equal(2, code);
        Assert.Empty(stdout);
        Assert.Contains("--model", stderr + stdout);
    }

    [StoriesFact]
    public void Invalid_sampling_settings_are_bad_input()
    {
        var (code, _, stderr) = Run("generate", "--model", SharedModels.Stories260KCheckpoint!, "--tokenizer", SharedModels.Stories260KTokenizer!,
            "--top-p", "1.5");
        Assert.Equal(1, code);
        Assert.Contains("--top-p", stderr);
    }
}
