namespace PeftGen.Analyzers.Tests.TestSupport;

/// <summary>Consumer code shared by the tests.</summary>
internal static class Sources
{
    /// <summary>A tiny Hugging Face config.json: 3 layers, hidden 64, intermediate 172, 8 heads, 4 KV heads.</summary>
    public const string TinyConfig = """
        {
          "architectures": ["LlamaForCausalLM"],
          "hidden_size": 64,
          "intermediate_size": 172,
          "num_hidden_layers": 3,
          "num_attention_heads": 8,
          "num_key_value_heads": 4,
          "vocab_size": 512,
          "rms_norm_eps": 1e-05,
          "tie_word_embeddings": false
        }
        """;

    /// <summary>
    /// A user module with constant shapes under <paramref name="attributes"/>: q_proj [32, 32], v_proj [16, 32] (out, in)
    /// and a norm, plus <paramref name="members"/>.
    /// </summary>
    public static string Attention(string attributes, string members = "") => $$"""
        using PeftGen;
        using PeftGen.Nn;
        using PeftGen.Quantization;

        {{attributes}}
        internal partial class Attention : Module
        {
            public Attention()
            {
                QProj = RegisterModule("q_proj", new Linear(32, 32));
                VProj = RegisterModule("v_proj", new Linear(32, 16));
                Norm = RegisterModule("norm", new RMSNorm(32, 1e-5f));
            }

            [ModuleName("q_proj")]
            public LinearBase QProj { get; private set; }

            {{members}}
            [ModuleName("v_proj")]
            public LinearBase VProj { get; private set; }

            [ModuleName("norm")]
            public RMSNorm Norm { get; }
        }
        """;

    /// <summary>A subclass of the library's Llama, declared as <paramref name="declaration"/>, under <paramref name="attributes"/>.</summary>
    public static string Llama(string attributes, string declaration = "partial class Chat") => $$"""
        using PeftGen;
        using PeftGen.Models.Llama;
        using PeftGen.Quantization;

        {{attributes}}
        internal {{declaration}} : LlamaForCausalLM
        {
            public Chat(LlamaConfig config) : base(config) { }
        }
        """;
}
