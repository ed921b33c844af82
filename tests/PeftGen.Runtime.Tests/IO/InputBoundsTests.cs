using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Models.Llama;
using PeftGen.Tests.TestSupport;
using PeftGen.Text;
using Xunit;

namespace PeftGen.Tests.IO;

/// <summary>Sizes read from files and flags are bounded by what the data can hold before anything is allocated.</summary>
public class InputBoundsTests
{
    private static string DoctoredFolder(TempFolder dir, string key, long value)
    {
        using (var model = new LlamaForCausalLM(IOTestSupport.Tiny, seed: 3)) HuggingFaceLlama.Save(model, dir.Path);
        var json = JsonNode.Parse(File.ReadAllText(dir.File("config.json")))!.AsObject();
        json[key] = value;
        File.WriteAllText(dir.File("config.json"), json.ToJsonString());
        return dir.Path;
    }

    [Theory]
    [InlineData("num_hidden_layers", 1_000_000_000L)]
    [InlineData("num_hidden_layers", 100_000L)]
    [InlineData("hidden_size", 1_000_000_000L)]
    [InlineData("vocab_size", 2_000_000_000L)]
    [InlineData("intermediate_size", 1_000_000L)]
    public void A_config_asking_for_more_than_its_weights_hold_fails_fast_with_a_short_message(string key, long value)
    {
        using var dir = new TempFolder();
        string folder = DoctoredFolder(dir, key, value);
        var watch = Stopwatch.StartNew();
        var e = Assert.Throws<InvalidDataException>(() => HuggingFaceLlama.Load(folder));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
        Assert.Contains(key, e.Message);
        Assert.Contains("config.json", e.Message);
        Assert.True(e.Message.Length < 1000, $"a {e.Message.Length}-character message: {e.Message[..200]}");
    }

    [Fact]
    public void A_tensor_mismatch_lists_at_most_ten_names()
    {
        using var dir = new TempFolder();
        var config = IOTestSupport.Tiny with { NumHiddenLayers = 12 };
        using (var model = new LlamaForCausalLM(config, seed: 3)) HuggingFaceLlama.Save(model, dir.Path);
        var json = JsonNode.Parse(File.ReadAllText(dir.File("config.json")))!.AsObject();
        json["num_hidden_layers"] = 1; // every tensor of layers 1..11 is unexpected
        File.WriteAllText(dir.File("config.json"), json.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => HuggingFaceLlama.Load(dir.Path));
        Assert.Contains("more", e.Message);
        Assert.True(e.Message.Length < 2000, e.Message);
    }

    [Fact]
    public void A_llama2c_header_larger_than_the_file_fails_fast()
    {
        using var dir = new TempFolder();
        string path = dir.File("huge.bin");
        var header = new[] { 1 << 20, 1 << 20, 1 << 20, 1 << 10, 1 << 10, 1 << 20, 1 << 20 };
        File.WriteAllBytes(path, [.. header.SelectMany(BitConverter.GetBytes), .. new byte[1024]]);
        var watch = Stopwatch.StartNew();
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(path));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2), $"took {watch.Elapsed}");
        Assert.Contains("huge.bin", e.Message);
    }

    [Theory]
    [InlineData(1e39)]
    [InlineData(double.NaN)]
    public void Non_finite_config_floats_are_refused(double theta)
    {
        var config = IOTestSupport.Tiny with { RopeTheta = (float)theta };
        Assert.Throws<InvalidDataException>(() => config.Validate("c"));
    }

    [Fact]
    public void Batch_size_above_the_row_count_is_capped_at_the_rows()
    {
        var examples = Enumerable.Range(0, 30).Select(i => new TokenizedExample([1, 2, 3 + i], [1, 2, 3 + i])).ToList();
        var source = new DatasetBatchSource(examples, batchSize: 5000, maxSequenceLength: 8, seed: 1, padId: 0);
        Assert.Equal(30, source.BatchSize);
        Assert.Equal(5000, source.RequestedBatchSize);
        Assert.Equal(1, source.BatchesPerEpoch);
        var batch = source.BatchAt(0);
        Assert.Equal(30, batch.BatchSize);
        Assert.Equal(30 * 2, batch.Inputs.Length);
        var normal = new DatasetBatchSource(examples, batchSize: 4, maxSequenceLength: 8, seed: 1, padId: 0);
        Assert.Equal(4, normal.BatchAt(0).BatchSize);
    }

    [Fact]
    public void Jsonl_lines_over_the_limit_are_refused_naming_file_and_line()
    {
        using var dir = new TempFolder();
        string path = dir.File("big.jsonl");
        File.WriteAllText(path, "{\"text\": \"ok\"}\n\n{\"text\": \"" + new string('a', 20 * 1024 * 1024) + "\"}\n");
        var tokenizer = new ByteTokenizer();
        var e = Assert.Throws<InvalidDataException>(() => JsonlDataset.Load(path, tokenizer, new JsonlDatasetOptions { MaxSequenceLength = 16 }));
        Assert.Contains("big.jsonl", e.Message);
        Assert.Contains("line 3", e.Message);
    }

    [Fact]
    public void Dev_zero_is_refused()
    {
        if (!OperatingSystem.IsLinux()) return;
        var e = Assert.Throws<InvalidDataException>(() => JsonlDataset.Load("/dev/zero", new ByteTokenizer(), new JsonlDatasetOptions { MaxSequenceLength = 16 }));
        Assert.Contains("line 1", e.Message);
    }

    [Theory]
    [InlineData("text")]
    [InlineData("alpaca")]
    public void Long_texts_are_cut_before_tokenizing_with_the_same_tokens(string kind)
    {
        using var dir = new TempFolder();
        string path = dir.File("long.jsonl");
        string longText = string.Concat(Enumerable.Range(0, 60_000).Select(i => $"w{i % 97} "));
        string line = kind == "text"
            ? new JsonObject { ["text"] = longText }.ToJsonString()
            : new JsonObject { ["instruction"] = "Say it", ["output"] = longText }.ToJsonString();
        File.WriteAllText(path, line + "\n" + line.Replace("w", "v") + "\r\n");
        var tokenizer = new CountingTokenizer();
        var options = new JsonlDatasetOptions { MaxSequenceLength = 300 };
        var data = JsonlDataset.Load(path, tokenizer, options);
        Assert.True(tokenizer.LongestInput < 100_000, $"tokenized {tokenizer.LongestInput} characters at once");
        Assert.Equal(2, data.Examples.Count);
        // Same tokens and labels as tokenizing everything, then cutting.
        Assert.Equal(301, data.Examples[0].Tokens.Length);
        if (kind == "text")
        {
            var expected = tokenizer.Encode(longText, true, true)[..301];
            Assert.Equal(expected, data.Examples[0].Tokens);
            Assert.Equal(expected, data.Examples[0].Labels);
        }
        else Assert.Contains(data.Examples[0].Labels, l => l != JsonlDataset.IgnoreLabel);
    }

    /// <summary>One token per character (ASCII), recording the longest text it was asked to encode.</summary>
    private class ByteTokenizer : ITokenizer
    {
        public int VocabSize => 131;
        public int BosId => 1;
        public int EosId => 2;
        public int LongestInput { get; private set; }

        public int[] Encode(string text, bool addBos = true, bool addEos = false)
        {
            LongestInput = Math.Max(LongestInput, text.Length);
            var ids = new List<int>(text.Length + 2);
            if (addBos) ids.Add(BosId);
            foreach (char c in text) ids.Add(3 + (c & 127));
            if (addEos) ids.Add(EosId);
            return [.. ids];
        }

        public string Decode(ReadOnlySpan<int> ids)
        {
            var chars = new List<char>();
            foreach (int id in ids) if (id >= 3) chars.Add((char)(id - 3));
            return new string([.. chars]);
        }
    }

    private sealed class CountingTokenizer : ByteTokenizer;
}
