using PeftGen.Models.Llama;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.Nn;

public class ModuleTests
{
    private static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = 11, MaxPositionEmbeddings = 8,
    };

    [Fact]
    public void Parameters_have_hugging_face_paths_and_shapes()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 0);
        var names = model.NamedParameters().ToDictionary(p => p.Path, p => p.Tensor.Shape.ToArray());
        Assert.Equal([11, 16], names["model.embed_tokens.weight"]);
        Assert.Equal([16, 16], names["model.layers.0.self_attn.q_proj.weight"]);
        Assert.Equal([8, 16], names["model.layers.1.self_attn.k_proj.weight"]);
        Assert.Equal([24, 16], names["model.layers.1.mlp.gate_proj.weight"]);
        Assert.Equal([16, 24], names["model.layers.1.mlp.down_proj.weight"]);
        Assert.Equal([16], names["model.layers.0.post_attention_layernorm.weight"]);
        Assert.Equal([16], names["model.norm.weight"]);
        Assert.Equal([11, 16], names["lm_head.weight"]);
        Assert.Equal(2 + 2 * 9 + 1, names.Count);
    }

    [Fact]
    public void State_dict_round_trips_and_reports_mismatches()
    {
        using var a = new LlamaForCausalLM(Tiny, seed: 1);
        using var b = new LlamaForCausalLM(Tiny, seed: 2);
        b.LoadStateDict(a.StateDict());
        foreach (var (path, t) in a.NamedParameters())
            Assert.Equal(t.ToArray(), b.StateDict()[path].ToArray());

        using var other = new LlamaForCausalLM(Tiny with { IntermediateSize = 32 }, seed: 3);
        var e = Assert.Throws<InvalidDataException>(() => b.LoadStateDict(other.StateDict()));
        Assert.Contains("mlp.gate_proj.weight", e.Message);
        Assert.Contains("[32, 16]", e.Message);

        var partial = a.StateDict().Where(kv => kv.Key != "model.norm.weight").ToDictionary();
        var missing = Assert.Throws<InvalidDataException>(() => b.LoadStateDict(partial));
        Assert.Contains("missing [model.norm.weight]", missing.Message);
        b.LoadStateDict(partial, strict: false);
    }

    [Fact]
    public void Freezing_removes_parameters_from_training()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 0);
        var (trainable, total) = model.CountParameters();
        Assert.Equal(trainable, total);
        model.Freeze();
        Assert.Equal(0, model.CountParameters().Trainable);
        Assert.Empty(model.TrainableParameters());
        model.Model.Norm.Unfreeze();
        Assert.Equal(16, model.CountParameters().Trainable);
    }

    [Fact]
    public void Frozen_weights_get_no_gradient_buffers()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 0);
        model.Freeze();
        model.Model.Norm.Unfreeze();
        int[] ids = [1, 2, 3, 4];
        using (TensorScope.Begin()) model.Loss(ids, [2, 3, 4, 5], 1, 4).Backward();
        Assert.NotNull(model.Model.Norm.Weight.Grad);
        Assert.All(model.NamedParameters().Where(p => p.Path != "model.norm.weight"), p => Assert.Null(p.Tensor.Grad));
    }

    [Fact]
    public void Bfloat16_and_float16_round_trip()
    {
        using var x = Tensor.FromArray([1f, -2.5f, 3.14159f, 1e-3f, 65504f], 5);
        using var bf = x.To(DType.BFloat16);
        using var h = x.To(DType.Float16);
        Assert.Equal(DType.BFloat16, bf.DType);
        var back = bf.ToArray();
        for (int i = 0; i < 5; i++) Assert.True(Math.Abs(back[i] - x.ToArray()[i]) <= Math.Abs(x.ToArray()[i]) / 128, $"bf16 {back[i]} vs {x.ToArray()[i]}");
        Assert.Equal(3.140625f, h.ToArray()[2]);
        Assert.Equal(65504f, h.ToArray()[4]);
        Assert.Equal(0x3F80, Float16Conversions.ToBFloat16(1f));
        Assert.Equal(0x3F80, Float16Conversions.ToBFloat16(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie → even
        Assert.Equal(0x3F82, Float16Conversions.ToBFloat16(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie → even (up)
    }
}

/// <summary>The pool counter is process-wide: measured in a collection that runs alone.</summary>
[Collection("CpuThreads")]
public class MemoryTests
{
    private static readonly LlamaConfig Tiny = new()
    {
        HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        VocabSize = 11, MaxPositionEmbeddings = 8,
    };

    [Fact]
    public void Scope_returns_activation_memory_to_the_pool()
    {
        using var model = new LlamaForCausalLM(Tiny, seed: 0);
        int[] ids = [1, 2, 3, 4];
        var pooled = new List<long>();
        for (int step = 0; step < 4; step++)
        {
            using (TensorScope.Begin()) model.Loss(ids, [2, 3, 4, 5], 1, 4).Backward();
            pooled.Add(CpuBufferPool.PooledBytes);
        }
        Assert.Equal(pooled[2], pooled[3]); // every step-local buffer came back
    }
}

public class LlamaConfigTests
{
    [Fact]
    public void Config_json_keys_that_are_absent_keep_their_defaults()
    {
        var path = Path.Combine(Path.GetTempPath(), $"peftgen-config-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(path, """{"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10}""");
            var config = PeftGen.Models.Llama.LlamaConfig.Load(path);
            Assert.Equal(10000f, config.RopeTheta);
            Assert.Equal(1e-6f, config.RmsNormEps);
            Assert.Equal(4, config.KeyValueHeads);
            Assert.Equal(2048, config.MaxPositionEmbeddings);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
