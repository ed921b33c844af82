using System.Text.Json;
using PeftGen.Autograd;
using PeftGen.Generation;
using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Tensors;
using PeftGen.Tests.TestSupport;
using PeftGen.Text;
using Xunit;

namespace PeftGen.Tests.Models;

/// <summary>
/// The real llama2.c model stories260K against golden values from an independent PyTorch implementation
/// (tests/golden/stories260k_golden.py).
/// </summary>
public class Stories260KTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly Lazy<JsonElement> Golden = new(() =>
        JsonDocument.Parse(File.ReadAllText(SharedModels.GoldenFile("stories260K.json"))).RootElement);

    private static readonly Lazy<LlamaForCausalLM> Model = new(() => Llama2Checkpoint.Load(SharedModels.Stories260KCheckpoint!));

    private static readonly Lazy<Llama2Tokenizer> Tokenizer = new(() => Llama2Tokenizer.Load(SharedModels.Stories260KTokenizer!, 512));

    [StoriesFact]
    public void Header_maps_to_config()
    {
        var c = Model.Value.Config;
        Assert.Equal((64, 172, 5, 8, 4, 512, 512), (c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.VocabSize, c.MaxPositionEmbeddings));
        Assert.True(c.TieWordEmbeddings);
        Assert.Null(Model.Value.LmHead);
        Assert.Contains(Model.Value.NamedParameters(), p => p.Path == "model.layers.4.mlp.down_proj.weight" && p.Tensor.Shape.SequenceEqual([64, 172]));
    }

    [StoriesFact]
    public void Prompt_logits_match_pytorch()
    {
        var prompt = Golden.Value.GetProperty("prompt");
        int[] ids = prompt.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        float[][] expected = prompt.GetProperty("logits").EnumerateArray().Select(row => row.EnumerateArray().Select(e => e.GetSingle()).ToArray()).ToArray();
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        var logits = Model.Value.Forward(ids, 1, ids.Length).ToArray(); // [1, t, 512]
        double maxErr = 0;
        for (int t = 0; t < ids.Length; t++)
            for (int v = 0; v < 512; v++)
                maxErr = Math.Max(maxErr, Math.Abs(logits[t * 512 + v] - expected[t][v]));
        output.WriteLine($"max |logit − PyTorch| = {maxErr:E3} over {ids.Length} positions × 512");
        Assert.True(maxErr < 2e-4, $"max |logit − PyTorch| = {maxErr:E3} over {ids.Length} positions");
    }

    [StoriesFact]
    public void Prompt_loss_matches_pytorch()
    {
        var prompt = Golden.Value.GetProperty("prompt");
        int[] ids = prompt.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        float expected = Golden.Value.GetProperty("prompt_loss").GetSingle();
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        int[] inputs = ids[..^1], targets = ids[1..];
        float loss = Model.Value.Loss(inputs, targets, 1, inputs.Length).Item();
        Assert.True(Math.Abs(loss - expected) < 1e-4, $"loss {loss} vs PyTorch {expected} (error {Math.Abs(loss - expected):E3})");
    }

    [StoriesFact]
    public void Greedy_generation_reproduces_llama2c()
    {
        int[] expected = Golden.Value.GetProperty("greedy_from_bos").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var generator = new TextGenerator(Model.Value, Tokenizer.Value);
        var ids = generator.GenerateIds([Tokenizer.Value.BosId], SamplingOptions.Greedy(expected.Length) with { StopAtEos = false });
        var generated = ids[1..];
        int firstDifference = Enumerable.Range(0, expected.Length).FirstOrDefault(i => i >= generated.Length || generated[i] != expected[i], -1);
        Assert.True(firstDifference == -1, $"generation departs from PyTorch at token {firstDifference} of {expected.Length}");
        string text = Tokenizer.Value.Decode(ids);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily.", text);
        Assert.Equal(Golden.Value.GetProperty("greedy_text").GetString(), text);
    }

    [StoriesFact]
    public void Cached_decoding_matches_full_forward()
    {
        int[] ids = [1, 403, 407, 261, 378, 432];
        using var noGrad = GradMode.Disable();
        using var scope = TensorScope.Begin();
        var full = Model.Value.Forward(ids, 1, ids.Length).ToArray();
        using var cache = new KvCache(Model.Value.Config, 1, 16);
        var prefix = Model.Value.Forward(ids.AsSpan(0, 3), 1, 3, cache).ToArray();
        double maxErr = 0;
        for (int i = 0; i < prefix.Length; i++) maxErr = Math.Max(maxErr, Math.Abs(prefix[i] - full[i]));
        for (int t = 3; t < ids.Length; t++)
        {
            var step = Model.Value.Forward(ids.AsSpan(t, 1), 1, 1, cache).ToArray();
            for (int v = 0; v < 512; v++) maxErr = Math.Max(maxErr, Math.Abs(step[v] - full[t * 512 + v]));
        }
        Assert.True(maxErr < 1e-4, $"max |cached − full| = {maxErr:E3}");
    }

    [StoriesFact]
    public void Seeded_sampling_is_repeatable_and_seed_dependent()
    {
        var generator = new TextGenerator(Model.Value, Tokenizer.Value);
        var options = new SamplingOptions { MaxNewTokens = 40, Temperature = 1f, TopP = 0.9f, Seed = 3 };
        string a = generator.Generate("Once upon a time", options);
        string b = generator.Generate("Once upon a time", options);
        string c = generator.Generate("Once upon a time", options with { Seed = 4 });
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.StartsWith("Once upon a time", a);
    }

    [StoriesFact]
    public void Prompt_longer_than_context_is_a_clear_error()
    {
        var generator = new TextGenerator(Model.Value, Tokenizer.Value);
        var ids = Enumerable.Repeat(400, 600).Prepend(1).ToArray();
        var e = Assert.Throws<ArgumentException>(() => generator.GenerateIds(ids, SamplingOptions.Greedy(5)));
        Assert.Contains("context is 512", e.Message);
    }

    [StoriesFact]
    public void Truncated_checkpoint_names_the_file_and_sizes()
    {
        var path = Path.Combine(Path.GetTempPath(), $"peftgen-trunc-{Guid.NewGuid():N}.bin");
        try
        {
            var bytes = File.ReadAllBytes(SharedModels.Stories260KCheckpoint!);
            File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
            var e = Assert.Throws<InvalidDataException>(() => Llama2Checkpoint.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("truncated", e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
