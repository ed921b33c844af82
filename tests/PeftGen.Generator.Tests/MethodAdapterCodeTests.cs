using System.Reflection;
using System.Runtime.Loader;
using Microsoft.CodeAnalysis;
using PeftGen.Generator.Tests.TestSupport;

namespace PeftGen.Generator.Tests;

/// <summary>
/// Runs the generated <c>ApplyAdapters()</c> of every method on the tiny Llama: the trainable parameters the returned
/// object holds equal the compile-time <c>TrainableParameterCount</c> and the runtime's own plan or count, and the
/// generated <c>CreateTrainer</c> wires what the attributes declare. One compilation holds every method's class.
/// </summary>
public class MethodAdapterCodeTests
{
    private const string Probe = """
        using System.Linq;
        using PeftGen.Adapters;
        using PeftGen.Models.Llama;
        using PeftGen.Training;

        namespace Demo;

        internal static class Probe
        {
            private static LlamaConfig Config() => new()
            {
                HiddenSize = 64, IntermediateSize = 172, NumHiddenLayers = 3, NumAttentionHeads = 8, NumKeyValueHeads = 4,
                VocabSize = 512, RmsNormEps = 1e-5f,
            };

            private static long Trainable(PeftGen.Nn.Module model) => model.NamedParameters().Where(p => p.Tensor.RequiresGrad).Sum(p => p.Tensor.Count);

            private static readonly IBatchSource Batches = BatchSource.FromFunction(_ => new Batch(new[] { 1, 2 }, new[] { 2, 3 }, 1, 2));

            // "compile-time runtime-plan trainable" per method.
            public static string[] Counts()
            {
                var lines = new System.Collections.Generic.List<string>();
                using (var model = new FrugalChat(Config()))
                using (var peft = model.ApplyAdapters())
                    lines.Add($"LoRA-FA {FrugalChat.TrainableParameterCount} {peft.Plan().Sum(l => l.TrainableParameters)} {Trainable(model)}");
                using (var model = new VeraChat(Config()))
                using (var peft = model.ApplyAdapters())
                    lines.Add($"VeRA {VeraChat.TrainableParameterCount} {peft.Plan().Sum(l => l.TrainableParameters)} {Trainable(model)}");
                using (var model = new ScaledChat(Config()))
                using (var ia3 = model.ApplyAdapters())
                    lines.Add($"IA3 {ScaledChat.TrainableParameterCount} {ia3.Plan().Sum(l => l.TrainableParameters)} {Trainable(model)}");
                using (var model = new NarrowChat(Config()))
                using (var bottleneck = model.ApplyAdapters())
                    lines.Add($"Bottleneck {NarrowChat.TrainableParameterCount} {bottleneck.Plan().Sum(s => s.TrainableParameters)} {Trainable(model)}");
                using (var model = new RandomPrompt(Config()))
                using (var prompt = model.ApplyAdapters())
                    lines.Add($"PromptTuning {RandomPrompt.TrainableParameterCount} {prompt.ParameterCount("default")} {prompt.TrainableParameters().Sum(t => t.Count)}");
                using (var model = new PrefixedChat(Config()))
                using (var prompt = model.ApplyAdapters())
                    lines.Add($"PrefixTuning {PrefixedChat.TrainableParameterCount} {prompt.ParameterCount("default")} {prompt.TrainableParameters().Sum(t => t.Count)}");
                using (var model = new EncodedChat(Config()))
                using (var prompt = model.ApplyAdapters())
                    lines.Add($"PTuning {EncodedChat.TrainableParameterCount} {prompt.ParameterCount("default")} {prompt.TrainableParameters().Sum(t => t.Count)}");
                return lines.ToArray();
            }

            public static string Trainers()
            {
                var options = new TrainerOptions { MaxSteps = 1 };
                using var frugal = new FrugalChat(Config());
                using var peft = frugal.ApplyAdapters();
                using var trainer = frugal.CreateTrainer(peft, _ => throw new System.InvalidOperationException(), Batches, options);
                var drop = frugal.Model.LayerDrop;
                string first = $"lora+ {trainer.Options.LoRAPlusRatio} decay {trainer.Options.LayerwiseLearningRateDecay} drop {drop?.Probabilities[2]}";

                using var moving = new MovingChat(Config());
                using var deltaPeft = moving.ApplyAdapters();
                using var deltaTrainer = moving.CreateTrainer(deltaPeft, _ => throw new System.InvalidOperationException(), Batches, options);
                string second = $"hooks {deltaTrainer.AfterStepHooks.Count} {deltaTrainer.AfterStepHooks[0].GetType().Name}";

                using var sparse = new SparseChat(Config());
                var selection = sparse.ApplyAdapters();
                using var sparseTrainer = sparse.CreateTrainer(selection, _ => throw new System.InvalidOperationException(), Batches, options);
                string third = $"masks {sparseTrainer.GradientMasks.Count} entries {selection.TrainableEntries}";
                return first + "; " + second + "; " + third;
            }
        }
        """;

    private static GeneratorCase Combined()
    {
        var cases = new[]
        {
            GeneratorCases.LoRAFAWithTraining, GeneratorCases.DeltaLoRA, GeneratorCases.VeRAAllOptions, GeneratorCases.IA3AllOptions,
            GeneratorCases.BottleneckAllOptions, GeneratorCases.PrefixTuningProjection, GeneratorCases.PTuningEncoder,
            GeneratorCases.Llama("RandomPrompt", "[PromptTuning(8)]"),
            GeneratorCases.Llama("SparseChat", "[SparseFineTuning(1.0, \"gate_proj\", Score = PeftGen.Adapters.SparseScore.None)]"),
        };
        return new GeneratorCase(cases.SelectMany(c => c.Sources).Append(Probe).ToArray(), [cases[0].AdditionalFiles[0]]);
    }

    private static readonly Lazy<byte[]> Image = new(() =>
    {
        var (output, _) = GeneratorHarness.Run(Combined());
        using var stream = new MemoryStream();
        var emitted = output.Emit(stream);
        Assert.True(emitted.Success, string.Join("\n", emitted.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error)));
        return stream.ToArray();
    });

    [Fact]
    public void EveryMethodTrainsTheCompileTimeParameterCount()
    {
        var lines = (string[])Call("Counts")!;
        Assert.Equal(7, lines.Length);
        foreach (var line in lines)
        {
            var parts = line.Split(' ');
            Assert.True(parts[1] == parts[2] && parts[2] == parts[3], $"{parts[0]}: compile-time {parts[1]}, runtime plan {parts[2]}, trainable {parts[3]}");
        }
        // The formulas, by hand, for the tiny config (hidden 64, intermediate 172, 3 layers, kv_dim 32).
        Assert.Contains("LoRA-FA 7200 ", lines[0]);       // r·out over 7 layers × 3: 4·(64+32+32+64+172+172+64)·3
        Assert.Contains("VeRA 512 ", lines[1]);           // q, v, o in layers 0 and 1 (k excluded): (64+32) + (32+32) + (64+32) per layer
        Assert.Contains("Bottleneck 2048 ", lines[3]);    // 2·64·8 per MLP site, layers 0 and 2, no bias
        Assert.Contains("PromptTuning 512 ", lines[4]);   // 8 · 64
    }

    [Fact]
    public void CreateTrainerWiresTheDeclaredTraining()
    {
        string wiring = (string)Call("Trainers")!;
        // Sparse: every gate_proj entry, 64·172 per layer × 3.
        Assert.Equal("lora+ 16 decay 0.9 drop 0.2; hooks 1 DeltaLoRAUpdater; masks 1 entries 33024", wiring);
    }

    private static object? Call(string method)
    {
        var context = new AssemblyLoadContext("methods", isCollectible: true);
        try
        {
            using var stream = new MemoryStream(Image.Value);
            var probe = context.LoadFromStream(stream).GetType("Demo.Probe", throwOnError: true)!;
            try
            {
                return probe.GetMethod(method)!.Invoke(null, null);
            }
            catch (TargetInvocationException e) when (e.InnerException != null)
            {
                throw e.InnerException;
            }
        }
        finally
        {
            context.Unload();
        }
    }
}
