using System.Globalization;
using System.Text.RegularExpressions;
using PeftGen.EndToEnd.Tests.TestSupport;

namespace PeftGen.EndToEnd.Tests;

/// <summary>
/// The generated code is reflection-free: a consumer with the trimming and AOT analyzers on and warnings as errors
/// publishes with NativeAOT, and the native program applies QLoRA and IA3 adapters, trains them (QLoRA through the
/// generated <c>CreateTrainer</c>, IA3 through the trainer of its adapted model), and saves and reloads both adapters in
/// PEFT format with equal logits.
/// </summary>
[Collection(EndToEndCollection.Name)]
public sealed class NativeAotTests(PackageFeedFixture fixture)
{
    // Rank 4 on the seven projections of each of the 2 layers of Consumer's config (hidden 32, key/value width 16, MLP 64).
    private const long AllLinearTrainableParameters = 2 * 4 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 3 * (32 + 64));
    private const int AllLinearLayers = 2 * 7;

    private const string ModelsSource = """
        using PeftGen;
        using PeftGen.Models.Llama;
        using PeftGen.Quantization;

        [LoRA(rank: 4, targets: "all-linear")]
        [Quantize(QuantType.NF4, DoubleQuant = true)]
        [LoRAPlus(16)]
        [ModelConfig("config.json")]
        partial class Tiny : LlamaForCausalLM
        {
            public Tiny() : base(LlamaConfig.Load(Path.Combine(AppContext.BaseDirectory, "config.json")), seed: 1) { }
        }

        [IA3]
        [ModelConfig("config.json")]
        partial class Scaled : LlamaForCausalLM
        {
            public Scaled() : base(LlamaConfig.Load(Path.Combine(AppContext.BaseDirectory, "config.json")), seed: 2) { }
        }
        """;

    private const string ProgramSource = """
        using System.Globalization;
        using PeftGen.Data;
        using PeftGen.Models.Llama;
        using PeftGen.Training;

        int[] inputs = Enumerable.Range(0, 16).Select(i => i % 16).ToArray();
        int[] targets = inputs.Select(t => (t + 1) % 16).ToArray();
        var batch = new Batch(inputs, targets, BatchSize: 2, Length: 8);

        var model = new Tiny();
        using var peft = model.ApplyAdapters();
        Console.WriteLine($"compile-time trainable: {Tiny.TrainableParameterCount}");
        Console.WriteLine($"run-time trainable: {model.CountParameters().Trainable}");
        Console.WriteLine($"planned layers: {Tiny.AdapterPlan.Count}");
        using (var trainer = model.CreateTrainer(peft, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length),
            BatchSource.FromFunction(_ => batch), new TrainerOptions { MaxSteps = 1 }))
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step 1 loss: {trainer.Train().Losses[0]}"));
        string loraFolder = Path.Combine(AppContext.BaseDirectory, "lora-adapter");
        Tiny.SaveAdapter(peft, loraFolder);
        using var reloaded = new Tiny().LoadAdapter(loraFolder);
        using var untrained = new Tiny().ApplyAdapters();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"lora reload max |dlogit|: {MaxDifference(model, reloaded.Model, inputs)}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"lora training max |dlogit|: {MaxDifference(model, untrained.Model, inputs)}"));

        var scaled = new Scaled();
        using var ia3 = scaled.ApplyAdapters();
        using (var trainer = new Trainer(ia3, BatchSource.FromFunction(_ => batch), new TrainerOptions { MaxSteps = 3 }))
            trainer.Train();
        using var ia3Untrained = new Scaled().ApplyAdapters();
        string ia3Folder = Path.Combine(AppContext.BaseDirectory, "ia3-adapter");
        Scaled.SaveAdapter(ia3, ia3Folder);
        using var ia3Reloaded = new Scaled().LoadAdapter(ia3Folder);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ia3 reload max |dlogit|: {MaxDifference(scaled, ia3Reloaded.Model, inputs)}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ia3 training max |dlogit|: {MaxDifference(scaled, ia3Untrained.Model, inputs)}"));

        static float MaxDifference(LlamaForCausalLM a, LlamaForCausalLM b, int[] ids)
        {
            a.Eval();
            b.Eval();
            float[] x = a.Forward(ids, 2, 8).ToArray(), y = b.Forward(ids, 2, 8).ToArray();
            return x.Zip(y, (p, q) => MathF.Abs(p - q)).Max();
        }
        """;

    [NativeToolchainFact]
    public void NativeAotPublishHasNoTrimOrAotWarningsAndTheNativeProgramTrainsSavesAndReloads()
    {
        string folder = fixture.NewFolder("native-aot-consumer");
        // gcc (with the system's ld) where there is one: clang, the NativeAOT default, may lack the lld it links with.
        string linker = NativeToolchainFactAttribute.HasGcc ? "<CppCompilerAndLinker>gcc</CppCompilerAndLinker>" : "";
        Consumer.Write(folder, $"""
              <PropertyGroup>
                <PublishAot>true</PublishAot>
                <IsAotCompatible>true</IsAotCompatible>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                <RuntimeIdentifier>linux-x64</RuntimeIdentifier>
                {linker}
              </PropertyGroup>
              <ItemGroup>
                {RepositoryBuild.ProjectReference("src/Runtime/PeftGen.Runtime.csproj")}
                {RepositoryBuild.ProjectReference("src/Generator/PeftGen.Generator.csproj", "OutputItemType=\"Analyzer\" ReferenceOutputAssembly=\"false\"")}
                {RepositoryBuild.ProjectReference("src/Analyzers/PeftGen.Analyzers.csproj", "OutputItemType=\"Analyzer\" ReferenceOutputAssembly=\"false\"")}
              </ItemGroup>
            """, targets: "q_proj,v_proj");
        File.WriteAllText(Path.Combine(folder, "Tiny.cs"), ModelsSource);
        File.WriteAllText(Path.Combine(folder, "Program.cs"), ProgramSource);
        string output = Path.Combine(folder, "native");

        var publish = DotNet.Run(folder, ["publish", "-c", RepositoryBuild.Configuration, "-p:RestoreRecursive=false", "-o", output, .. DotNet.NoBuildServers]);
        Assert.True(publish.ExitCode == 0, publish.ToString());
        Assert.DoesNotContain("warning", publish.Output, StringComparison.OrdinalIgnoreCase);
        string executable = Path.Combine(output, "Tiny");
        Assert.True(File.Exists(executable), $"no native executable at {executable}:\n{publish}");
        Assert.False(File.Exists(Path.Combine(output, "Tiny.dll")), "the publish made a managed program, not a native one");

        var run = DotNet.RunProgram(executable, output);
        Consumer.AssertRanOneStep(run, AllLinearTrainableParameters);
        Assert.Contains($"planned layers: {AllLinearLayers}", run.Output);
        foreach (string method in new[] { "lora", "ia3" })
        {
            // Training moved the logits, and the saved adapter brings exactly that change back.
            float trained = Figure(run, $"{method} training max |dlogit|");
            float reloaded = Figure(run, $"{method} reload max |dlogit|");
            Assert.True(trained > 1e-5f, $"training {method} left the logits unchanged (max |dlogit| {trained}):\n{run}");
            Assert.True(reloaded <= 1e-6f, $"the reloaded {method} adapter changed the logits by up to {reloaded}:\n{run}");
        }
    }

    private static float Figure(CommandResult run, string label)
    {
        var match = Regex.Match(run.Output, "^" + Regex.Escape(label) + @": (\S+)\r?$", RegexOptions.Multiline);
        Assert.True(match.Success, $"no '{label}' line in:\n{run}");
        return float.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
    }
}
