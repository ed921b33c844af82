using System.Reflection;
using System.Runtime.Loader;
using PeftGen.Generator.Tests.TestSupport;

namespace PeftGen.Generator.Tests;

/// <summary>
/// Compiles a consumer with the generator, loads it, and runs the generated <c>ApplyAdapters()</c> on a real model: the
/// compile-time plan must equal the runtime's plan and its count the runtime's trainable parameters.
/// </summary>
public class EndToEndTests
{
    // Appended to a consumer file (namespace Demo); MODEL is the annotated class.
    private const string Probe = """

        internal static class Probe
        {
            public static long[] Check(global::PeftGen.Nn.Module model, string expectedPlan)
            {
                var peft = ((MODEL)model).ApplyAdapters();
                string runtimePlan = string.Join("\n", peft.Plan());
                if (runtimePlan != expectedPlan)
                    throw new global::System.InvalidOperationException("Plans differ. Runtime:\n" + runtimePlan + "\nCompile time:\n" + expectedPlan);
                return new[] { MODEL.TrainableParameterCount, model.CountParameters().Trainable };
            }
        }
        """;

    [Fact]
    public async Task UserModulePlanMatchesRuntime()
    {
        var source = GeneratorCases.UserModuleOverrides.Sources[0] + Probe.Replace("MODEL", "TinyAttention");
        var (trainablePlanned, trainableRuntime) = await RunAsync(new GeneratorCase(source), "Demo.TinyAttention", []);
        Assert.Equal(trainablePlanned, trainableRuntime);
        Assert.Equal(8L * (32 + 32) + 4L * (32 + 16) + 8L * (32 + 16) + 2L * (32 + 128) + 2L * (128 + 32), trainablePlanned);
    }

    [Fact]
    public async Task QuantizedLlamaPlanMatchesRuntime()
    {
        var testCase = GeneratorCases.LlamaAllOptions;
        var source = testCase.Sources[0] + Probe.Replace("MODEL", "StoryTeller");
        var (trainablePlanned, trainableRuntime) = await RunAsync(testCase with { Sources = [source] }, "Demo.StoryTeller",
            [new Models.Llama.LlamaConfig
            {
                HiddenSize = 64, IntermediateSize = 172, NumHiddenLayers = 3, NumAttentionHeads = 8, NumKeyValueHeads = 4,
                VocabSize = 512, RmsNormEps = 1e-5f,
            }]);
        // Bias = LoraOnly would also train biases of adapted layers; Llama projections have none.
        Assert.Equal(trainablePlanned, trainableRuntime);
    }

    private static async Task<(long Planned, long Runtime)> RunAsync(GeneratorCase testCase, string typeName, object[] constructorArguments)
    {
        using var stream = new MemoryStream(await PeftGeneratorTest.EmitAsync(testCase));
        var context = new AssemblyLoadContext("consumer", isCollectible: true);
        try
        {
            var assembly = context.LoadFromStream(stream);
            var type = assembly.GetType(typeName, throwOnError: true)!;
            var model = (PeftGen.Nn.Module)Activator.CreateInstance(type, constructorArguments)!;
            var planProperty = type.GetProperty("AdapterPlan", BindingFlags.Public | BindingFlags.Static)!;
            var expectedPlan = string.Join("\n", (IEnumerable<global::PeftGen.Methods.AdaptedLayer>)planProperty.GetValue(null)!);
            var check = assembly.GetType("Demo.Probe", throwOnError: true)!.GetMethod("Check")!;
            var counts = (long[])check.Invoke(null, [model, expectedPlan])!;
            model.Dispose();
            return (counts[0], counts[1]);
        }
        finally
        {
            context.Unload();
        }
    }
}
