using PeftGen.Generator.Tests.TestSupport;

namespace PeftGen.Generator.Tests;

/// <summary>Consumer programs that together use every attribute and option; each has a snapshot.</summary>
internal static class GeneratorCases
{
    private const string TinyConfig = """
        {
          "architectures": ["LlamaForCausalLM"],
          "hidden_size": 64,
          "intermediate_size": 172,
          "num_hidden_layers": 3,
          "num_attention_heads": 8,
          "num_key_value_heads": 4,
          "vocab_size": 512,
          "rms_norm_eps": 1e-05,
          "rope_scaling": null,
          "tie_word_embeddings": false,
          "torch_dtype": "float32"
        }
        """;

    /// <summary>A Llama subclass using every [LoRA] option, [Quantize], [LoRAPlus] and [ModelConfig].</summary>
    public static GeneratorCase LlamaAllOptions { get; } = new(
        [
            """
            using PeftGen;
            using PeftGen.Methods.LoRA;
            using PeftGen.Models.Llama;
            using PeftGen.Quantization;
            using PeftGen.Tensors;

            namespace Demo;

            [LoRA(rank: 16, alpha: 32, targets: "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                Dropout = 0.05, UseRsLoRA = true, UseDoRA = true, Init = LoRAInit.Gaussian, Bias = LoRABias.LoraOnly,
                Exclude = "k_proj", Layers = new[] { 0, 2 }, Seed = 42)]
            [Quantize(QuantType.NF4, DoubleQuant = false, BlockSize = 128, ComputeType = DType.BFloat16)]
            [LoRAPlus(ratio: 16)]
            [ModelConfig("tiny/config.json")]
            internal partial class StoryTeller : LlamaForCausalLM
            {
                public StoryTeller(LlamaConfig config) : base(config, seed: 1) { }
            }
            """,
        ],
        [("/repo/models/tiny/config.json", TinyConfig)]) { HintName = "Demo.StoryTeller.g.cs" };

    /// <summary>The minimal declaration on a library model without a config: no plan, run-time checks only.</summary>
    public static GeneratorCase LlamaMinimal { get; } = new(
        """
        using PeftGen;
        using PeftGen.Models.Llama;

        namespace Demo;

        [LoRA(rank: 8, targets: "q_proj,v_proj")]
        internal partial class Chat : LlamaForCausalLM
        {
            public Chat(LlamaConfig config) : base(config) { }
        }
        """) { HintName = "Demo.Chat.g.cs" };

    /// <summary>Two named adapters (all-linear and a regex) on a QLoRA model with a config.</summary>
    public static GeneratorCase TwoNamedAdapters { get; } = new(
        [
            """
            using PeftGen;
            using PeftGen.Models.Llama;
            using PeftGen.Quantization;

            namespace Demo.Models
            {
                internal static partial class Zoo
                {
                    [LoRA(rank: 4, targets: "all-linear", Name = "general")]
                    [LoRA(rank: 2, alpha: 4, targets: @"model\.layers\.[01]\.self_attn\.(q|v)_proj", Name = "sql-queries")]
                    [Quantize(QuantType.FP4)]
                    [ModelConfig("config.json")]
                    internal partial class Assistant : LlamaForCausalLM
                    {
                        public Assistant(LlamaConfig config) : base(config, seed: 3) { }
                    }
                }
            }
            """,
        ],
        [("/repo/config.json", TinyConfig.Replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 2"))]) { HintName = "Demo.Models.Zoo.Assistant.g.cs" };

    private const string TinyAttentionSource = """
        using PeftGen;
        using PeftGen.Nn;

        namespace Demo;

        [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
        internal partial class TinyAttention : Module
        {
            public const int Dim = 32;

            private LinearBase q_proj = new Linear(Dim, Dim);
            [LoRAOverride(Rank = 4, Alpha = 8)]
            private LinearBase k_proj = new Linear(Dim, Dim / 2);
            private LinearBase v_proj = new Linear(Dim, Dim / 2);
            [NoLoRA]
            private LinearBase o_proj = new Linear(Dim, Dim);

            public TinyAttention()
            {
                RegisterModule("q_proj", q_proj);
                RegisterModule("k_proj", k_proj);
                RegisterModule("v_proj", v_proj);
                RegisterModule("o_proj", o_proj);
                Mlp = RegisterModule("mlp", new TinyMlp());
            }

            [ModuleName("mlp")]
            [LoRAOverride(Rank = 2, Adapter = "default")]
            public TinyMlp Mlp { get; }

            protected override void OnModuleReplaced(string name, Module replacement)
            {
                var linear = (LinearBase)replacement;
                switch (name)
                {
                    case "q_proj": q_proj = linear; break;
                    case "k_proj": k_proj = linear; break;
                    case "v_proj": v_proj = linear; break;
                    case "o_proj": o_proj = linear; break;
                    default: base.OnModuleReplaced(name, replacement); break;
                }
            }
        }

        internal sealed class TinyMlp : Module
        {
            public TinyMlp()
            {
                Up = RegisterModule("up", new Linear(TinyAttention.Dim, 4 * TinyAttention.Dim));
                Down = RegisterModule("down", new Linear(4 * TinyAttention.Dim, TinyAttention.Dim, hasBias: true));
            }

            [ModuleName("up")]
            public LinearBase Up { get; private set; }

            [ModuleName("down")]
            public LinearBase Down { get; private set; }

            protected override void OnModuleReplaced(string name, Module replacement)
            {
                if (name == "up") Up = (LinearBase)replacement;
                else Down = (LinearBase)replacement;
            }
        }
        """;

    /// <summary>A user module with constant shapes, a submodule, member overrides and an exclusion.</summary>
    public static GeneratorCase UserModuleOverrides { get; } = new(TinyAttentionSource) { HintName = "Demo.TinyAttention.g.cs" };

    /// <summary>A user module list whose length is a run-time value: patterns keyed by the shared path suffix, no plan.</summary>
    public static GeneratorCase UserModuleList { get; } = new(
        """
        using System.Linq;
        using PeftGen;
        using PeftGen.Nn;

        /// <summary>A public model, so the generated members need (and have) XML docs.</summary>
        [LoRA(rank: 4, targets: "proj", Exclude = "head")]
        public partial class Stack : Module
        {
            /// <summary>Creates <paramref name="depth"/> blocks.</summary>
            public Stack(int depth)
            {
                Blocks = RegisterModule("blocks", new ModuleList<Block>(Enumerable.Range(0, depth).Select(_ => new Block())));
                Head = RegisterModule("head", new Linear(16, 10));
            }

            /// <summary>The blocks.</summary>
            [ModuleName("blocks")]
            public ModuleList<Block> Blocks { get; }

            /// <summary>The head.</summary>
            [ModuleName("head")]
            public Linear Head { get; }
        }

        /// <summary>A block.</summary>
        public sealed class Block : Module
        {
            /// <summary>Creates the projection.</summary>
            public Block() => Proj = RegisterModule("proj", new Linear(16, 16));

            /// <summary>The projection.</summary>
            [ModuleName("proj"), LoRAOverride(Rank = 2), LoRAOverride(Alpha = 3, Adapter = "other")]
            public LinearBase Proj { get; }
        }
        """) { HintName = "Stack.g.cs" };

    /// <summary>
    /// Widths and depth from constructor arguments (shapes known only at run time, so ApplyAdapters checks the ranks),
    /// and an optional submodule behind a nullable property (read with "?.").
    /// </summary>
    public static GeneratorCase UserModuleRunTimeShapes { get; } = new(
        """
        using System.Linq;
        using PeftGen;
        using PeftGen.Nn;

        namespace Demo;

        [LoRA(rank: 8, alpha: 16, targets: "proj,gate")]
        internal partial class Resizable : Module
        {
            public Resizable(int width, int depth, bool withExtra)
            {
                Blocks = RegisterModule("blocks", new ModuleList<Stage>(Enumerable.Range(0, depth).Select(_ => new Stage(width))));
                Gate = RegisterModule("gate", new Linear(width, width / 2));
                if (withExtra) Extra = RegisterModule("extra", new Stage(width));
            }

            [ModuleName("blocks")]
            public ModuleList<Stage> Blocks { get; }

            [ModuleName("gate")]
            public LinearBase Gate { get; private set; }

            [ModuleName("extra")]
            public Stage? Extra { get; }

            protected override void OnModuleReplaced(string name, Module replacement)
            {
                if (name == "gate") Gate = (LinearBase)replacement;
                else base.OnModuleReplaced(name, replacement);
            }
        }

        internal sealed class Stage : Module
        {
            public Stage(int width) => Proj = RegisterModule("proj", new Linear(width, width));

            [ModuleName("proj")]
            public LinearBase Proj { get; private set; }

            protected override void OnModuleReplaced(string name, Module replacement) => Proj = (LinearBase)replacement;
        }
        """) { HintName = "Demo.Resizable.g.cs" };

    /// <summary>A Llama subclass <paramref name="name"/> under <paramref name="attributes"/>, its shapes from the tiny config.</summary>
    public static GeneratorCase Llama(string name, string attributes) => new(
        [
            $$"""
            using PeftGen;
            using PeftGen.Methods.Bottleneck;
            using PeftGen.Methods.LayerDrop;
            using PeftGen.Methods.Sparse;
            using PeftGen.Models.Llama;
            using PeftGen.Quantization;

            namespace Demo;

            {{attributes}}
            [ModelConfig("tiny/config.json")]
            internal partial class {{name}} : LlamaForCausalLM
            {
                public {{name}}(LlamaConfig config) : base(config, seed: 1) { }
            }
            """,
        ],
        [("/repo/models/tiny/config.json", TinyConfig)]) { HintName = $"Demo.{name}.g.cs" };

    /// <summary>LoRA-FA with its gradient correction, LoRA+, layer drop and layer-wise decay: a CreateTrainer with every option.</summary>
    public static GeneratorCase LoRAFAWithTraining { get; } = Llama("FrugalChat", """
        [LoRA(rank: 4, targets: "all-linear", UseLoRAFA = true, LoRAFAGradientCorrection = true)]
        [LoRAPlus(16)]
        [LayerDrop(0.2, Schedule = LayerDropSchedule.Linear, Layers = new[] { 1, 2 }, Seed = 5)]
        [LayerwiseLearningRate(0.9)]
        """);

    /// <summary>Delta-LoRA next to [LoRA]: the options on the config and the updater in CreateTrainer.</summary>
    public static GeneratorCase DeltaLoRA { get; } = Llama("MovingChat", """
        [LoRA(rank: 8, alpha: 16, targets: "q_proj,v_proj")]
        [DeltaLoRA(startStep: 100, updateRatio: 0.5)]
        """);

    /// <summary>VeRA with every option over a 4-bit base.</summary>
    public static GeneratorCase VeRAAllOptions { get; } = Llama("VeraChat", """
        [VeRA(rank: 32, targets: "q_proj,k_proj,v_proj,o_proj", DInitial = 0.2, ProjectionSeed = 7, SaveProjection = false,
            Dropout = 0.1, Exclude = "k_proj", Layers = new[] { 0, 1 }, Seed = 3)]
        [Quantize(QuantType.NF4)]
        """);

    /// <summary>(IA)³ with PEFT's Llama defaults.</summary>
    public static GeneratorCase IA3Defaults { get; } = Llama("ScaledChat", "[IA3]");

    /// <summary>(IA)³ with explicit targets, feed-forward layers, exclusions and a random start.</summary>
    public static GeneratorCase IA3AllOptions { get; } = Llama("ScaledChat", """
        [IA3("k_proj,v_proj,up_proj,down_proj", FeedForward = "up_proj,down_proj", Exclude = "model.layers.0.self_attn.k_proj", InitWeights = false, Seed = 9)]
        """);

    /// <summary>Prompt tuning started from a text, with layer-wise decay (no trainer wiring for prompt learning).</summary>
    public static GeneratorCase PromptTuningText { get; } = Llama("PromptedChat", """
        [PromptTuning(virtualTokens: 8, InitText = "Classify the sentiment:", Seed = 2)]
        [LayerwiseLearningRate(0.95)]
        """);

    /// <summary>Prefix tuning with the projection MLP.</summary>
    public static GeneratorCase PrefixTuningProjection { get; } = Llama("PrefixedChat", """
        [PrefixTuning(virtualTokens: 6, Projection = true, EncoderHiddenSize = 24, Seed = 4)]
        """);

    /// <summary>P-tuning with an encoder width and layer drop.</summary>
    public static GeneratorCase PTuningEncoder { get; } = Llama("EncodedChat", """
        [PTuning(virtualTokens: 5, encoderHiddenSize: 32, Seed = 6)]
        [LayerDrop(0.1)]
        """);

    /// <summary>Bottleneck adapters with every option.</summary>
    public static GeneratorCase BottleneckAllOptions { get; } = Llama("NarrowChat", """
        [Bottleneck(8, Placement = BottleneckPlacement.Mlp, Activation = BottleneckActivation.Gelu, Bias = false, Layers = new[] { 0, 2 }, Seed = 11)]
        """);

    /// <summary>Bottleneck width from the reduction factor, with layer-wise decay.</summary>
    public static GeneratorCase BottleneckReduction { get; } = Llama("NarrowChat", """
        [Bottleneck(ReductionFactor = 4)]
        [LayerwiseLearningRate(0.8)]
        """);

    /// <summary>Sparse fine-tuning of a regex's parameters, with its trainer wiring.</summary>
    public static GeneratorCase SparseRegex { get; } = Llama("SparseChat", """
        [SparseFineTuning(0.05, @"model\.layers\.\d+\.mlp\..*", Score = SparseScore.GradientTimesWeight, CalibrationBatches = 2)]
        """);

    public static IReadOnlyDictionary<string, GeneratorCase> All { get; } = new Dictionary<string, GeneratorCase>
    {
        [nameof(LlamaAllOptions)] = LlamaAllOptions,
        [nameof(LlamaMinimal)] = LlamaMinimal,
        [nameof(TwoNamedAdapters)] = TwoNamedAdapters,
        [nameof(UserModuleOverrides)] = UserModuleOverrides,
        [nameof(UserModuleList)] = UserModuleList,
        [nameof(UserModuleRunTimeShapes)] = UserModuleRunTimeShapes,
        [nameof(LoRAFAWithTraining)] = LoRAFAWithTraining,
        [nameof(DeltaLoRA)] = DeltaLoRA,
        [nameof(VeRAAllOptions)] = VeRAAllOptions,
        [nameof(IA3Defaults)] = IA3Defaults,
        [nameof(IA3AllOptions)] = IA3AllOptions,
        [nameof(PromptTuningText)] = PromptTuningText,
        [nameof(PrefixTuningProjection)] = PrefixTuningProjection,
        [nameof(PTuningEncoder)] = PTuningEncoder,
        [nameof(BottleneckAllOptions)] = BottleneckAllOptions,
        [nameof(BottleneckReduction)] = BottleneckReduction,
        [nameof(SparseRegex)] = SparseRegex,
    };

    public static TheoryData<string> Names => new(All.Keys);
}
