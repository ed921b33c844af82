using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.IO;

public class HuggingFaceLlamaTests(ITestOutputHelper output)
{
    [Fact]
    public void Save_then_load_gives_identical_logits()
    {
        using var dir = new TempFolder();
        using var model = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 3);
        HuggingFaceLlama.Save(model, dir.Path);
        Assert.Contains("\"architectures\"", File.ReadAllText(dir.File("config.json")));
        using var loaded = HuggingFaceLlama.Load(dir.Path);
        Assert.False(loaded.Config.RopeInterleaved);
        double err = IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(model), IOTestSupport.Logits(loaded));
        output.WriteLine($"max |logit diff| = {err:E3}");
        Assert.Equal(0, err);
    }

    [Fact]
    public void Interleaved_model_is_permuted_on_save_and_computes_the_same_function()
    {
        using var dir = new TempFolder();
        using var model = new LlamaForCausalLM(IOTestSupport.Tiny with { RopeInterleaved = true }, seed: 5); // GQA: 4 heads, 2 kv heads
        HuggingFaceLlama.Save(model, dir.Path, DType.Float32);
        using var loaded = HuggingFaceLlama.Load(dir.Path);
        double err = IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(model), IOTestSupport.Logits(loaded));
        output.WriteLine($"interleaved → rotate-half, GQA: max |logit diff| = {err:E3}");
        Assert.True(err < 1e-4, $"max diff {err}");
    }

    [StoriesFact]
    public void Converted_stories260K_matches_the_llama2c_model()
    {
        using var dir = new TempFolder();
        HuggingFaceLlama.ConvertLlama2C(SharedModels.Stories260KCheckpoint!, dir.Path);
        using var original = Llama2Checkpoint.Load(SharedModels.Stories260KCheckpoint!);
        using var converted = HuggingFaceLlama.Load(dir.Path);
        Assert.Equal((8, 4), (converted.Config.NumAttentionHeads, converted.Config.KeyValueHeads));
        Assert.Null(converted.LmHead);
        int[] prompt = [1, 403, 407, 261, 378, 1118 % 512, 270, 301, 425, 16];
        double err = IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(original, prompt, 1), IOTestSupport.Logits(converted, prompt, 1));
        output.WriteLine($"stories260K llama2.c vs converted HF: max |logit diff| = {err:E3}");
        Assert.True(err < 1e-4, $"max diff {err}");
        // The q/k rows really moved: without the permutation the results would differ.
        using var plain = HuggingFaceLlama.Load(dir.Path);
        Assert.NotEqual(original.StateDict()["model.layers.0.self_attn.q_proj.weight"].ToArray(), plain.StateDict()["model.layers.0.self_attn.q_proj.weight"].ToArray());
    }

    [Fact]
    public void Sharded_folder_loads()
    {
        using var dir = new TempFolder();
        using var model = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 7);
        HuggingFaceLlama.Save(model, dir.Path);
        var all = model.NamedParameters().ToList();
        var map = new List<string>();
        for (int s = 0; s < 2; s++)
        {
            var part = all.Where((_, i) => i % 2 == s).ToList();
            string shard = $"model-0000{s + 1}-of-00002.safetensors";
            Safetensors.Save(dir.File(shard), part.Select(p => (p.Path, p.Tensor)));
            map.AddRange(part.Select(p => $"\"{p.Path}\": \"{shard}\""));
        }
        File.Delete(dir.File("model.safetensors"));
        File.WriteAllText(dir.File("model.safetensors.index.json"), $"{{\"metadata\": {{}}, \"weight_map\": {{{string.Join(", ", map)}}}}}");
        using var loaded = HuggingFaceLlama.Load(dir.Path);
        Assert.Equal(0, IOTestSupport.MaxAbsDiff(IOTestSupport.Logits(model), IOTestSupport.Logits(loaded)));
    }

    [Fact]
    public void Missing_unexpected_and_misshapen_tensors_are_listed_together()
    {
        using var dir = new TempFolder();
        using var model = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 1);
        var tensors = model.NamedParameters().Where(p => p.Path != "model.norm.weight" && p.Path != "lm_head.weight")
            .Select(p => (p.Path, p.Tensor)).ToList();
        using var extra = Tensor.Zeros(3);
        using var wrong = Tensor.Zeros(16, 31);
        tensors.Add(("model.extra.weight", extra));
        tensors.Add(("lm_head.weight", wrong));
        HuggingFaceLlama.Save(model, dir.Path);
        Safetensors.Save(dir.File("model.safetensors"), tensors);
        var e = Assert.Throws<InvalidDataException>(() => HuggingFaceLlama.Load(dir.Path));
        output.WriteLine(e.Message);
        Assert.Contains("model.norm.weight", e.Message);
        Assert.Contains("model.extra.weight", e.Message);
        Assert.Contains("'lm_head.weight' has shape [16, 31]", e.Message);
        Assert.Contains("[16, 32]", e.Message);
    }
}
