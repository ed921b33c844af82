using System.Globalization;
using System.Text.RegularExpressions;

namespace PeftGen.EndToEnd.Tests.TestSupport;

/// <summary>
/// A user's console program on PeftGen: a tiny Llama declared with the DSL (<c>Tiny</c>, LoRA rank 4 on the given
/// targets, shapes from config.json) whose Program.cs applies the adapters, prints the compile-time and run-time
/// trainable-parameter counts and trains one step.
/// </summary>
internal static partial class Consumer
{
    /// <summary>Trainable parameters of rank-4 LoRA on q_proj and v_proj of <see cref="ConfigJson"/>: 2 layers × (4·(32+32) + 4·(32+16)).</summary>
    public const long QandVTrainableParameters = 2 * (4 * (32 + 32) + 4 * (32 + 16));

    /// <summary>
    /// Trainable parameters of rank-4 LoRA on every linear layer of <see cref="ConfigJson"/> but the head: 2 layers × 4 ×
    /// (q 32+32, k 32+16, v 32+16, o 32+32, gate 32+64, up 32+64, down 64+32).
    /// </summary>
    public const long AllLinearTrainableParameters = 2 * 4 * ((32 + 32) + (32 + 16) + (32 + 16) + (32 + 32) + (32 + 64) + (32 + 64) + (64 + 32));

    private const string ConfigJson = """
        {
          "architectures": ["LlamaForCausalLM"],
          "hidden_size": 32,
          "intermediate_size": 64,
          "num_hidden_layers": 2,
          "num_attention_heads": 4,
          "num_key_value_heads": 2,
          "vocab_size": 16,
          "max_position_embeddings": 16,
          "rms_norm_eps": 1e-05,
          "rope_theta": 10000.0,
          "tie_word_embeddings": true
        }
        """;

    private const string ProgramSource = """
        using System.Globalization;
        using PeftGen.Data;
        using PeftGen.Training;

        var model = new Tiny();
        using var peft = model.ApplyAdapters();
        Console.WriteLine($"compile-time trainable: {Tiny.TrainableParameterCount}");
        Console.WriteLine($"run-time trainable: {model.CountParameters().Trainable}");

        // One batch of two sequences counting up mod 16; each token's target is the next.
        int[] inputs = Enumerable.Range(0, 16).Select(i => i % 16).ToArray();
        int[] targets = inputs.Select(t => (t + 1) % 16).ToArray();
        var batch = new Batch(inputs, targets, BatchSize: 2, Length: 8);
        using var trainer = new Trainer(model, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length),
            BatchSource.FromFunction(_ => batch), new TrainerOptions { MaxSteps = 1 });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step 1 loss: {trainer.Train().Losses[0]}"));
        """;

    /// <summary>
    /// Writes the program into <paramref name="folder"/> with the project body <paramref name="projectItems"/> (the
    /// PeftGen reference) and <paramref name="targets"/> as the LoRA targets.
    /// </summary>
    public static string Write(string folder, string projectItems, string targets)
    {
        Directory.CreateDirectory(folder);
        // Empty Directory.Build.props/targets end MSBuild's search of the folders above, so nothing from a parent folder
        // (the repository's, if the temporary folder were inside it) changes how the consumer builds.
        File.WriteAllText(Path.Combine(folder, "Directory.Build.props"), "<Project />\n");
        File.WriteAllText(Path.Combine(folder, "Directory.Build.targets"), "<Project />\n");
        File.WriteAllText(Path.Combine(folder, "config.json"), ConfigJson);
        File.WriteAllText(Path.Combine(folder, "Program.cs"), ProgramSource);
        SetTargets(folder, targets);
        string project = Path.Combine(folder, "Tiny.csproj");
        File.WriteAllText(project, $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <AdditionalFiles Include="config.json" CopyToOutputDirectory="PreserveNewest" />
              </ItemGroup>
            {projectItems}
            </Project>
            """);
        return project;
    }

    /// <summary>Rewrites the model's declaration with other LoRA targets.</summary>
    public static void SetTargets(string folder, string targets) =>
        SetModel(folder, $$"""
            using PeftGen;
            using PeftGen.Models.Llama;

            [LoRA(rank: 4, targets: "{{targets}}")]
            [ModelConfig("config.json")]
            """);

    /// <summary>
    /// Rewrites the model's declaration: <paramref name="header"/> (usings and attributes) over the class <c>Tiny</c>, a
    /// Llama built from config.json.
    /// </summary>
    public static void SetModel(string folder, string header) =>
        File.WriteAllText(Path.Combine(folder, "Tiny.cs"), $$"""
            {{header}}
            partial class Tiny : LlamaForCausalLM
            {
                public Tiny() : base(LlamaConfig.Load(Path.Combine(AppContext.BaseDirectory, "config.json")), seed: 1) { }
            }
            """);

    /// <summary>Checks the output of a run of the program: equal counts of the expected size and a finite first loss.</summary>
    public static void AssertRanOneStep(CommandResult run, long expectedTrainable)
    {
        Assert.True(run.ExitCode == 0, run.ToString());
        long compileTime = long.Parse(Single(CompileTimePattern(), run), CultureInfo.InvariantCulture);
        long runTime = long.Parse(Single(RunTimePattern(), run), CultureInfo.InvariantCulture);
        Assert.Equal(compileTime, runTime);
        Assert.Equal(expectedTrainable, compileTime);
        Assert.True(float.IsFinite(float.Parse(Single(LossPattern(), run), CultureInfo.InvariantCulture)), run.ToString());
    }

    private static string Single(Regex pattern, CommandResult run)
    {
        var match = pattern.Match(run.Output);
        Assert.True(match.Success, $"no line matching '{pattern}' in:\n{run}");
        return match.Groups[1].Value;
    }

    [GeneratedRegex(@"^compile-time trainable: (\d+)\r?$", RegexOptions.Multiline)]
    private static partial Regex CompileTimePattern();

    [GeneratedRegex(@"^run-time trainable: (\d+)\r?$", RegexOptions.Multiline)]
    private static partial Regex RunTimePattern();

    [GeneratedRegex(@"^step 1 loss: (\S+)\r?$", RegexOptions.Multiline)]
    private static partial Regex LossPattern();
}
