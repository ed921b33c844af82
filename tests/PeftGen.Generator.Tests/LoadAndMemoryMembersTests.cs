using PeftGen.Generator.Tests.TestSupport;

namespace PeftGen.Generator.Tests;

/// <summary>
/// When the generator emits <c>FromPretrained</c> (LoRA on a Llama model with a <c>(LlamaConfig)</c> constructor) and
/// <c>EstimateTrainingMemory</c> (LoRA on a Llama model whose config.json it read with every shape the estimate needs);
/// the generated code compiles either way.
/// </summary>
public class LoadAndMemoryMembersTests
{
    private const string FromPretrained = "FromPretrained(string modelPath)";
    private const string EstimateTrainingMemory = "EstimateTrainingMemory(int batchSize";

    private const string Config = """
        {
          "hidden_size": 64,
          "intermediate_size": 172,
          "num_hidden_layers": 2,
          "num_attention_heads": 8,
          "num_key_value_heads": 2,
          "vocab_size": 512,
          "head_dim": 16,
          "max_position_embeddings": 128,
          "tie_word_embeddings": true
        }
        """;

    private static string Llama(string members, string attributes = "[LoRA(rank: 4, targets: \"q_proj,v_proj\")]", string modifiers = "internal") => $$"""
        using PeftGen;
        using PeftGen.Models.Llama;
        using PeftGen.Quantization;

        namespace Demo;

        {{attributes}}
        [Quantize(QuantType.NF4)]
        {{modifiers}} partial class Chat : LlamaForCausalLM
        {
        {{members}}
        }
        """;

    [Theory]
    [InlineData("public Chat(LlamaConfig config) : base(config) { }", true)]
    [InlineData("private Chat(LlamaConfig config) : base(config, seed: 1) { }", true)]
    [InlineData("public Chat(LlamaConfig config) : base(config) { } public Chat(int layers) : base(new LlamaConfig { NumHiddenLayers = layers }) { }", true)]
    [InlineData("public Chat(LlamaConfig config, int seed) : base(config, seed) { }", false)]
    [InlineData("public Chat(LlamaConfig config, int seed = 0) : base(config, seed) { }", false)]
    [InlineData("public Chat() : base(new LlamaConfig()) { }", false)]
    [InlineData("public Chat(ref LlamaConfig config) : base(config) { }", false)]
    public async Task FromPretrainedNeedsAConstructorTakingOnlyALlamaConfig(string constructors, bool emitted)
    {
        string text = await GenerateAsync(new GeneratorCase(Llama(constructors)));
        Assert.Equal(emitted, text.Contains(FromPretrained, StringComparison.Ordinal));
    }

    [Fact]
    public async Task AbstractModelGetsNoFromPretrained() =>
        Assert.DoesNotContain(FromPretrained, await GenerateAsync(new GeneratorCase(Llama("protected Chat(LlamaConfig config) : base(config) { }", modifiers: "internal abstract"))));

    [Fact]
    public async Task OtherMethodsAndModulesGetNoFromPretrainedOrEstimate()
    {
        // (IA)³ on a Llama model with the constructor and a config: only LoRA models get them.
        string ia3 = await GenerateAsync(new GeneratorCase(
            [Llama("public Chat(LlamaConfig config) : base(config) { }", "[IA3][ModelConfig(\"config.json\")]")],
            [("/repo/config.json", Config)]));
        Assert.DoesNotContain(FromPretrained, ia3);
        Assert.DoesNotContain(EstimateTrainingMemory, ia3);

        // A module that is not a Llama model, even with a (LlamaConfig) constructor and a config.
        string module = await GenerateAsync(new GeneratorCase(
            [
                """
                using PeftGen;
                using PeftGen.Models.Llama;
                using PeftGen.Nn;

                namespace Demo;

                [LoRA(rank: 4, targets: "proj")]
                [ModelConfig("config.json")]
                internal partial class Head : Module
                {
                    public Head(LlamaConfig config) => Proj = RegisterModule("proj", new Linear(config.HiddenSize, config.HiddenSize));

                    [ModuleName("proj")]
                    public LinearBase Proj { get; private set; }

                    protected override void OnModuleReplaced(string name, Module replacement) => Proj = (LinearBase)replacement;
                }
                """,
            ],
            [("/repo/config.json", Config)]));
        Assert.DoesNotContain(FromPretrained, module);
        Assert.DoesNotContain(EstimateTrainingMemory, module);
    }

    [Fact]
    public async Task EstimateTrainingMemoryUsesTheShapesOfTheConfigTheGeneratorRead()
    {
        string text = await GenerateAsync(new GeneratorCase(
            [Llama("public Chat(LlamaConfig config) : base(config) { }", "[LoRA(rank: 4, targets: \"all-linear\")][ModelConfig(\"models/chat/config.json\")]")],
            [("/repo/models/chat/config.json", Config)]));
        Assert.Contains(EstimateTrainingMemory, text);
        Assert.Contains(
            """
                        var config = new global::PeftGen.Models.Llama.LlamaConfig
                        {
                            HiddenSize = 64,
                            IntermediateSize = 172,
                            NumHiddenLayers = 2,
                            NumAttentionHeads = 8,
                            NumKeyValueHeads = 2,
                            VocabSize = 512,
                            HeadDimOverride = 16,
                            MaxPositionEmbeddings = 128,
                            TieWordEmbeddings = true,
                        };
                        return global::PeftGen.Training.MemoryModel.ForTraining(config, LoRAConfig, QuantizationConfig, frozenWeightType,
                            batchSize, sequenceLength, gradientCheckpointing, optimizer);
            """.Replace("\r\n", "\n"), text);
    }

    [Theory]
    [InlineData("", "config.json", Config)]                                                   // no [ModelConfig]
    [InlineData("[ModelConfig(\"other/config.json\")]", "config.json", Config)]               // names a file that is not there
    [InlineData("[ModelConfig(\"config.json\")]", "config.json", "{ \"hidden_size\": 64, ")]  // not JSON
    [InlineData("[ModelConfig(\"config.json\")]", "config.json", "{ \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 2, \"num_attention_heads\": 8 }")] // no vocab_size
    public async Task EstimateTrainingMemoryNeedsAReadableConfig(string modelConfig, string file, string json)
    {
        string text = await GenerateAsync(new GeneratorCase(
            [Llama("public Chat(LlamaConfig config) : base(config) { }", "[LoRA(rank: 4, targets: \"q_proj,v_proj\")]" + modelConfig)],
            [("/repo/" + file, json)]));
        Assert.DoesNotContain(EstimateTrainingMemory, text);
        Assert.Contains(FromPretrained, text);
    }

    /// <summary>The generated text, after checking that the consumer compiles without warnings.</summary>
    private static async Task<string> GenerateAsync(GeneratorCase testCase) =>
        (await PeftGeneratorTest.RunAsync(testCase, noWarnings: true)).GeneratedText;
}
