using PeftGen.Data;
using PeftGen.Tests.Text;
using PeftGen.Text;
using Xunit;

namespace PeftGen.Tests.Data;

public sealed class JsonlDatasetTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftgen-data-").FullName;
    private readonly HuggingFaceTokenizer _tokenizer;

    public JsonlDatasetTests() => _tokenizer = HuggingFaceTokenizer.Load(TestTokenizers.Write(_dir, TestTokenizers.ByteLevel()));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string WriteJsonl(params string[] lines)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".jsonl");
        File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void Chat_MasksPromptTokens()
    {
        string path = WriteJsonl("""{"messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "the her"}, {"role": "assistant", "content": "the lower"}]}""");

        var data = JsonlDataset.Load(path, _tokenizer, new JsonlDatasetOptions { ChatFormat = ChatFormat.ChatML });

        Assert.Equal(DatasetKind.Chat, data.Kind);
        var example = Assert.Single(data.Examples);
        var rendering = ChatFormat.ChatML.Render(
            [new("system", "be terse"), new("user", "the her"), new("assistant", "the lower")], false);
        Assert.Equal(_tokenizer.Encode(rendering.Text, addBos: false), example.Tokens);
        int promptTokens = _tokenizer.Encode(rendering.Text[..rendering.AssistantSpans[0].Start], addBos: false).Length;
        Assert.All(example.Labels[..promptTokens], l => Assert.Equal(-100, l));
        int[] scored = [.. example.Labels.Where(l => l != -100)];
        // Exactly the reply and its end marker are scored; the newline after <|im_end|> is not.
        Assert.Equal("the lower<|im_end|>", _tokenizer.Decode(scored));
        Assert.Equal(-100, example.Labels[^1]);
    }

    [Fact]
    public void Alpaca_ScoresOutputAndEos_TextScoresEverything()
    {
        string alpaca = WriteJsonl("""{"instruction": "the", "input": "", "output": "lower"}""");
        var a = Assert.Single(JsonlDataset.Load(alpaca, _tokenizer).Examples);
        int[] scored = [.. a.Labels.Where(l => l != -100)];
        Assert.Equal("lower<|endoftext|>", _tokenizer.Decode(scored));
        Assert.Equal(_tokenizer.EosId, a.Tokens[^1]);

        string text = WriteJsonl("""{"text": "the lower"}""", "", """{"text": " the"}""");
        var t = JsonlDataset.Load(text, _tokenizer);
        Assert.Equal(DatasetKind.Text, t.Kind);
        Assert.Equal([116, 257, 32, 260, 261, 264], t.Examples[0].Tokens);
        Assert.Equal(t.Examples[0].Tokens, t.Examples[0].Labels);
        Assert.Equal(2, t.Examples.Count);
    }

    [Fact]
    public void MalformedLines_NameFileAndLine_OrAreSkippedAndCounted()
    {
        string path = WriteJsonl(
            """{"instruction": "a", "output": "b"}""",
            """{"instruction": "a"}""",
            "{not json",
            """{"instruction": "c", "output": "d"}""");

        var e = Assert.Throws<InvalidDataException>(() => JsonlDataset.Load(path, _tokenizer));
        Assert.Contains(path, e.Message);
        Assert.Contains("line 2", e.Message);
        Assert.Contains("\"output\"", e.Message);

        var data = JsonlDataset.Load(path, _tokenizer, new JsonlDatasetOptions { SkipInvalid = true });
        Assert.Equal(2, data.SkippedLines);
        Assert.Equal(2, data.Examples.Count);

        var e3 = Assert.Throws<InvalidDataException>(() => JsonlDataset.Load(WriteJsonl("""{"text": "x"}""", "[1]"), _tokenizer));
        Assert.Contains("line 2", e3.Message);
    }

    [Fact]
    public void Truncation_KeepsMaxLengthPlusOneTokens()
    {
        string path = WriteJsonl("""{"text": "a b c d e f g h"}""");
        var data = JsonlDataset.Load(path, _tokenizer, new JsonlDatasetOptions { MaxSequenceLength = 4 });
        Assert.Equal(5, data.Examples[0].Tokens.Length);
        Assert.Equal(1, data.TruncatedExamples);
    }

    [Fact]
    public void Packing_ConcatenatesAndMasksExampleStarts()
    {
        TokenizedExample[] examples = [new([1, 10, 11, 12], [1, 10, 11, 12]), new([1, 20, 21], [1, 20, 21])];

        var source = new DatasetBatchSource(examples, batchSize: 2, maxSequenceLength: 3, seed: 0, padId: 0, pack: true, shuffle: false);
        var batch = source.Next();

        Assert.Equal(2, source.RowCount);
        // Rows overlap by one token: [1 10 11 12] and [12 1 20 21]; predicting the second example's first token
        // from the end of the first is masked.
        Assert.Equal([1, 10, 11, 12, 1, 20], batch.Inputs);
        Assert.Equal([10, 11, 12, -100, 20, 21], batch.Targets);
        batch.Validate();
    }

    [Fact]
    public void Unpacked_PadsShortRowsWithTargetsIgnored()
    {
        TokenizedExample[] examples = [new([1, 10, 11, 12], [-100, -100, 11, 12]), new([1, 20], [1, 20])];

        var batch = new DatasetBatchSource(examples, 2, 8, seed: 0, padId: 99, shuffle: false).Next();

        Assert.Equal(3, batch.Length);
        Assert.Equal([1, 10, 11, 1, 99, 99], batch.Inputs);
        Assert.Equal([-100, 11, 12, 20, -100, -100], batch.Targets);
    }

    [Fact]
    public void BatchSource_IsAPureFunctionOfSeedAndPosition()
    {
        var examples = Enumerable.Range(0, 10).Select(i => new TokenizedExample([1, 100 + i], [1, 100 + i])).ToArray();
        var a = new DatasetBatchSource(examples, 3, 4, seed: 5, padId: 0);
        var b = new DatasetBatchSource(examples, 3, 4, seed: 5, padId: 0);
        var c = new DatasetBatchSource(examples, 3, 4, seed: 6, padId: 0);

        Assert.Equal(4, a.BatchesPerEpoch);
        // Rows are [1, 100 + i], so each row's single target tells which example it is.
        var fromA = Enumerable.Range(0, 12).Select(_ => a.Next().Targets).ToList();
        b.Position = 7;
        Assert.Equal(fromA[7], b.Next().Targets);
        Assert.Equal(fromA[3], b.BatchAt(3).Targets);
        Assert.NotEqual(fromA.SelectMany(x => x), Enumerable.Range(0, 12).SelectMany(p => c.BatchAt(p).Targets));
        // Every row appears in every epoch, and epochs are ordered differently.
        for (int epoch = 0; epoch < 3; epoch++)
        {
            var seen = fromA.Skip(epoch * 4).Take(4).SelectMany(x => x).Where(t => t >= 100).ToHashSet();
            Assert.Equal(10, seen.Count);
        }
        Assert.NotEqual(fromA.Take(4).SelectMany(x => x), fromA.Skip(4).Take(4).SelectMany(x => x));
    }

    [Fact]
    public void Split_HasTheRequestedSizesAndIsSeeded()
    {
        string path = WriteJsonl([.. Enumerable.Range(0, 10).Select(i => $$"""{"text": "w{{i}}"}""")]);
        var data = JsonlDataset.Load(path, _tokenizer);

        var (train, eval) = data.Split(0.2, seed: 3);
        var (train2, eval2) = data.Split(0.2, seed: 3);

        Assert.Equal(8, train.Count);
        Assert.Equal(2, eval.Count);
        Assert.Equal(eval, eval2);
        Assert.Equal(train, train2);
        Assert.Empty(train.Intersect(eval));
        Assert.Equal(10, data.Split(1.0, 1).Eval.Count);
        Assert.Throws<ArgumentOutOfRangeException>(() => data.Split(1.5, 1));
        Assert.Equal(8, data.CreateBatchSource(2, 16, seed: 1, examples: train).RowCount);
    }
}
