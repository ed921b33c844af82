using PeftGen.Generator.Parsing;

namespace PeftGen.Generator.Tests;

public class ModelConfigReaderTests
{
    [Fact]
    public void ReadsTopLevelShapeFieldsAndSkipsNestedValues()
    {
        var config = ModelConfigReader.Read("config.json", """
            {
              "architectures": ["LlamaForCausalLM", {"x": [1, 2]}],
              "rope_scaling": {"hidden_size": 1, "type": "linear \"quoted\" \u00e9"},
              "hidden_size": 2048, "intermediate_size": 5632.0, "num_attention_heads": 32,
              "num_key_value_heads": 4, "num_hidden_layers": 22, "vocab_size": 32000,
              "head_dim": 64, "rms_norm_eps": 1e-05, "tie_word_embeddings": true, "bos_token_id": null
            }
            """);
        Assert.NotNull(config);
        Assert.Equal((2048, 5632, 32, 4, 22, 32000, 64, true),
            (config.HiddenSize, config.IntermediateSize, config.NumAttentionHeads, config.NumKeyValueHeads,
             config.NumHiddenLayers, config.VocabSize, config.HeadDim, config.TieWordEmbeddings));
    }

    [Theory]
    [InlineData("[1, 2]")]
    [InlineData("{\"hidden_size\": 64")]
    [InlineData("not json")]
    public void RejectsTextThatIsNotAnObject(string json) => Assert.Null(ModelConfigReader.Read("x.json", json));

    [Fact]
    public void FractionalOrMissingSizesAreUnknown()
    {
        var config = ModelConfigReader.Read("config.json", """{"hidden_size": 64.5}""");
        Assert.NotNull(config);
        Assert.Null(config.HiddenSize);
        Assert.Null(config.VocabSize);
        Assert.False(config.TieWordEmbeddings);
    }
}
