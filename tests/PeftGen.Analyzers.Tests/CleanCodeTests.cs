using PeftGen.Analyzers.Tests.TestSupport;

namespace PeftGen.Analyzers.Tests;

/// <summary>Valid models using every attribute and option produce no diagnostics at all.</summary>
public sealed class CleanCodeTests
{
    [Fact]
    public Task Llama_with_every_option_and_a_config() =>
        PeftAnalyzerTest.VerifyAsync(
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
            ("/repo/models/tiny/config.json", Sources.TinyConfig));

    [Fact]
    public Task Two_named_adapters_with_all_linear_and_a_regex() =>
        PeftAnalyzerTest.VerifyAsync(
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
            ("/repo/config.json", Sources.TinyConfig));

    [Fact]
    public Task User_modules_with_overrides_exclusions_and_lists() =>
        PeftAnalyzerTest.VerifyAsync(
            """
            using System.Linq;
            using PeftGen;
            using PeftGen.Nn;

            [LoRA(rank: 8, alpha: 16, targets: "all-linear")]
            internal partial class TinyAttention : Module
            {
                public const int Dim = 32;

                private LinearBase q_proj = new Linear(Dim, Dim);
                [LoRAOverride(Rank = 4, Alpha = 8)]
                private LinearBase k_proj = new Linear(Dim, Dim / 2);
                [NoLoRA]
                private LinearBase o_proj = new Linear(Dim, Dim);

                public TinyAttention()
                {
                    RegisterModule("q_proj", q_proj);
                    RegisterModule("k_proj", k_proj);
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
                        case "o_proj": o_proj = linear; break;
                        default: base.OnModuleReplaced(name, replacement); break;
                    }
                }
            }

            internal sealed class TinyMlp : Module
            {
                public TinyMlp() => Up = RegisterModule("up", new Linear(TinyAttention.Dim, 4 * TinyAttention.Dim));

                [ModuleName("up")]
                public LinearBase Up { get; private set; }
            }

            [LoRA(rank: 4, targets: "proj", Exclude = "head")]
            public partial class Stack : Module
            {
                public Stack(int depth)
                {
                    Blocks = RegisterModule("blocks", new ModuleList<Block>(Enumerable.Range(0, depth).Select(_ => new Block())));
                    Head = RegisterModule("head", new Linear(16, 10));
                }

                [ModuleName("blocks")]
                public ModuleList<Block> Blocks { get; }

                [ModuleName("head")]
                public Linear Head { get; }
            }

            public sealed class Block : Module
            {
                public Block() => Proj = RegisterModule("proj", new Linear(16, 16));

                [ModuleName("proj"), LoRAOverride(Rank = 2)]
                public LinearBase Proj { get; }
            }
            """);

    [Fact]
    public Task Attributes_named_like_PeftGen_ones_elsewhere_are_ignored() =>
        PeftAnalyzerTest.VerifyAsync("""
            internal sealed class LoRAAttribute : System.Attribute
            {
                public LoRAAttribute(int rank, string targets) { }
            }

            [LoRA(-1, "")]
            internal class Plain { }
            """);
}
