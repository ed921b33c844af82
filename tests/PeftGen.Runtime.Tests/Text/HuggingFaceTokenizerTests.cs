using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using PeftGen.Text;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Text;

public sealed class HuggingFaceTokenizerTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftgen-hf-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private HuggingFaceTokenizer Load(JsonObject json, JsonObject? config = null) =>
        HuggingFaceTokenizer.Load(TestTokenizers.Write(_dir, json, config));

    // ---- byte-level BPE ------------------------------------------------------------------------

    [Fact]
    public void ByteLevel_EncodesHandDerivedIds()
    {
        var tok = Load(TestTokenizers.ByteLevel());

        // "the" → t + he (no "t he" merge); " lower" → Ġ + (l o → lo, lo w → low) + (e r → er).
        Assert.Equal([116, 257, 32, 260, 261], tok.Encode("the lower", addBos: false));
        // Ġ t (rank 0), h e (rank 1), then Ġt he (rank 2).
        Assert.Equal([258], tok.Encode(" the", addBos: false));
        // Newline is byte 10 and splits off as its own pre-token.
        Assert.Equal([258, 10, 258], tok.Encode(" the\n the", addBos: false));
        Assert.Equal(267, tok.VocabSize);
        Assert.Equal("Ġthe", tok.GetToken(258));
    }

    [Fact]
    public void ByteLevel_MergesLowestRankFirst()
    {
        // h e has rank 1 and e r rank 5, so "her" is he + r; with the ranks swapped it is h + er.
        Assert.Equal([257, 114], Load(TestTokenizers.ByteLevel()).Encode("her", addBos: false));
        Assert.Equal([104, 257], Load(TestTokenizers.ByteLevel(swapHeAndEr: true)).Encode("her", addBos: false));
    }

    [Fact]
    public void ByteLevel_SplitPatternFromTheFileIsHonoured()
    {
        // GPT-2's regex keeps "123456" one word, so 3 4 merges; Llama 3's splits digits in threes: "123" "456".
        Assert.Equal([49, 50, 262, 53, 54], Load(TestTokenizers.ByteLevel()).Encode("123456", addBos: false));
        Assert.Equal([49, 50, 51, 52, 53, 54], Load(TestTokenizers.ByteLevel(TestTokenizers.Llama3Pattern)).Encode("123456", addBos: false));
    }

    [Fact]
    public void ByteLevel_AstralLettersAreLettersForTheRegex()
    {
        // 𝐀 (U+1D400, F0 9D 90 80) is a letter, so "a𝐀" is one \p{L}+ word as in Rust, and "a ð" (ð = byte F0) merges.
        var tok = Load(TestTokenizers.ByteLevel());
        int[] expected = [263, 0x9D, 0x90, 0x80];
        Assert.Equal(expected, tok.Encode("a\U0001D400", addBos: false));
        // An emoji is not a letter: "a" and "😀" are separate words, so nothing merges.
        Assert.Equal([97, 0xF0, 0x9F, 0x98, 0x80], tok.Encode("a\U0001F600", addBos: false));
    }

    [Fact]
    public void ByteLevel_AddedTokensAreNeverSplit()
    {
        var tok = Load(TestTokenizers.ByteLevel());

        int[] ids = tok.Encode("<|im_start|>her<|im_end|>\n<|endoftext|>", addBos: false);

        Assert.Equal([265, 257, 114, 266, 10, 264], ids);
        Assert.True(tok.IsSpecial(265));
        Assert.False(tok.IsSpecial(257));
        Assert.Equal("<|im_start|>her<|im_end|>\n<|endoftext|>", tok.Decode(ids));
        Assert.Equal("her\n", tok.Decode(ids, skipSpecialTokens: true));
        // A partial marker is ordinary text.
        Assert.Equal([60, 124, 105, 109], tok.Encode("<|im", addBos: false));
    }

    [Fact]
    public void ByteLevel_BosEosDefaultToEndOfTextWithoutConfig()
    {
        var tok = Load(TestTokenizers.ByteLevel());

        Assert.Equal(264, tok.BosId);
        Assert.Equal(264, tok.EosId);
        Assert.False(tok.AddBosToken);
        Assert.Equal([264, 258, 264], tok.Encode(" the", addBos: true, addEos: true));
        // A leading BOS is skipped when decoding; others stay.
        Assert.Equal(" the<|endoftext|>", tok.Decode([264, 258, 264]));
    }

    [Fact]
    public void ByteLevel_RoundTripsRandomUnicode()
    {
        var tok = Load(TestTokenizers.ByteLevel());
        var tok3 = Load(TestTokenizers.ByteLevel(TestTokenizers.Llama3Pattern));
        var random = new Random(1234);
        for (int i = 0; i < 300; i++)
        {
            string text = RandomText(random);
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: false)));
            Assert.Equal(text, tok3.Decode(tok3.Encode(text, addBos: true)));
        }
    }

    [Fact]
    public void Encode_RejectsUnpairedSurrogates()
    {
        var tok = Load(TestTokenizers.ByteLevel());
        Assert.Throws<ArgumentException>(() => tok.Encode("a\uD800b"));
        Assert.Throws<ArgumentException>(() => tok.Encode("a\uDC00"));
    }

    [Fact]
    public void ByteLevel_ThroughputIsReported()
    {
        var tok = Load(TestTokenizers.ByteLevel());
        var random = new Random(7);
        var words = Enumerable.Range(0, 5000)
            .Select(_ => new string(Enumerable.Range(0, random.Next(1, 10)).Select(_ => (char)random.Next('a', 'z' + 1)).ToArray()))
            .ToArray();
        var text = new StringBuilder(2_100_000);
        while (text.Length < 2_000_000)
        {
            text.Append(words[random.Next(words.Length)]).Append(random.Next(12) switch { 0 => ", ", 1 => ".\n", _ => " " });
        }
        string s = text.ToString();
        tok.Encode(s[..10_000], addBos: false);

        var watch = Stopwatch.StartNew();
        int[] ids = tok.Encode(s, addBos: false);
        watch.Stop();

        double mb = Encoding.UTF8.GetByteCount(s) / 1e6;
        output.WriteLine($"Byte-level BPE encode: {mb:F2} MB in {watch.Elapsed.TotalMilliseconds:F0} ms = {mb / watch.Elapsed.TotalSeconds:F1} MB/s ({ids.Length} tokens)");
        Assert.Equal(s, tok.Decode(ids));
    }

    // ---- SentencePiece-style BPE ---------------------------------------------------------------

    [Fact]
    public void SentencePiece_EncodesHandDerivedIds()
    {
        var tok = Load(TestTokenizers.SentencePiece());

        // "▁hello▁world": he, ll, llo, ▁he, ▁hello, ▁w, or; "l" and "d" stay.
        Assert.Equal([1, 271, 272, 273, 262, 266], tok.Encode("hello world"));
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.True(tok.AddBosToken);
        Assert.False(tok.AddEosToken);
        Assert.Equal("hello world", tok.Decode([1, 271, 272, 273, 262, 266]));
        Assert.Equal("hello world", tok.Decode([271, 272, 273, 262, 266]));
    }

    [Fact]
    public void SentencePiece_ByteFallbackForCharactersOutsideTheVocab()
    {
        var tok = Load(TestTokenizers.SentencePiece());

        // é is C3 A9 → <0xC3> <0xA9>; 😀 is F0 9F 98 80.
        Assert.Equal([259, 260, 3 + 0xC3, 3 + 0xA9], tok.Encode("hé", addBos: false));
        int[] ids = tok.Encode("😀", addBos: false);
        Assert.Equal([259, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80], ids);
        Assert.Equal("😀", tok.Decode(ids));
        // A byte run that is not valid UTF-8 becomes one U+FFFD per byte, as in the tokenizers library.
        Assert.Equal("h\uFFFD\uFFFD", tok.Decode([260, 3 + 0xF0, 3 + 0x9F]));
    }

    [Fact]
    public void SentencePiece_LegacyPrependAppliesAfterAddedTokens_MetaspaceFirstDoesNot()
    {
        var legacy = Load(TestTokenizers.SentencePiece());
        var metaspace = Load(TestTokenizers.SentencePiece(metaspace: true));

        // Prepend("▁") runs on every stretch of text: "world" after </s> becomes "▁world" (▁w or l d).
        Assert.Equal([271, 2, 272, 273, 262, 266], legacy.Encode("hello</s>world", addBos: false));
        // prepend_scheme "first" only prefixes the start of the input: "world" is w or l d.
        Assert.Equal([271, 2, 264, 273, 262, 266], metaspace.Encode("hello</s>world", addBos: false));
        Assert.Equal([1, 271, 272, 273, 262, 266], metaspace.Encode("hello world"));
        Assert.Equal("hello world", metaspace.Decode([1, 271, 272, 273, 262, 266]));
    }

    [Fact]
    public void SentencePiece_RoundTripsRandomUnicodeBothStyles()
    {
        // The encoder prefixes "▁" (a space) and the decoder strips exactly one leading space again, so leading
        // spaces of the text survive: " x" → "▁▁x" → "  x" → " x".
        var legacy = Load(TestTokenizers.SentencePiece());
        var metaspace = Load(TestTokenizers.SentencePiece(metaspace: true));
        Assert.Equal("  x", legacy.Decode(legacy.Encode("  x")));
        var random = new Random(99);
        for (int i = 0; i < 300; i++)
        {
            string text = RandomText(random);
            Assert.Equal(text, legacy.Decode(legacy.Encode(text)));
            // Metaspace does not prefix a text that already starts with "▁" (a space), yet its decoder still drops
            // the first one: the tokenizers library loses such a leading space, and so does this port.
            Assert.Equal(text.StartsWith(' ') ? text[1..] : text, metaspace.Decode(metaspace.Encode(text, addBos: false)));
        }
    }

    // ---- tokenizer_config.json -----------------------------------------------------------------

    [Fact]
    public void Config_SuppliesTokensFlagsAndChatTemplate()
    {
        var config = new JsonObject
        {
            ["bos_token"] = new JsonObject { ["content"] = "<|im_start|>", ["lstrip"] = false },
            ["eos_token"] = "<|im_end|>",
            ["add_bos_token"] = true,
            ["add_eos_token"] = true,
            ["chat_template"] = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
        };
        var tok = Load(TestTokenizers.ByteLevel(), config);

        Assert.Equal(265, tok.BosId);
        Assert.Equal(266, tok.EosId);
        Assert.Equal("<|im_end|>", tok.EosToken);
        Assert.True(tok.AddBosToken);
        Assert.True(tok.AddEosToken);
        Assert.StartsWith("{% for message", tok.ChatTemplate);
        Assert.Equal("chatml", tok.ChatFormatName);
    }

    [Fact]
    public void Config_UnknownEosTokenNamesTheConfigFile()
    {
        var path = TestTokenizers.Write(_dir, TestTokenizers.ByteLevel(), new JsonObject { ["eos_token"] = "<nope>" });
        var e = Assert.Throws<InvalidDataException>(() => HuggingFaceTokenizer.Load(path));
        Assert.Contains("tokenizer_config.json", e.Message);
        Assert.Contains("eos_token", e.Message);
    }

    // ---- bad files -----------------------------------------------------------------------------

    [Theory]
    [InlineData("not json at all", "not valid JSON")]
    [InlineData("{\"version\": \"1.0\"}", "$.model")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "$.model.vocab")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", "$.model.merges")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", "\"ab\" is not in model.vocab")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}", "$.model.merges[0]")]
    [InlineData("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", "'WordPiece'")]
    [InlineData("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", "'Unigram'")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}}", "$.pre_tokenizer.type")]
    public void BadFiles_ThrowInvalidDataNamingFileAndKey(string json, string expected)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(path, json);

        var e = Assert.Throws<InvalidDataException>(() => HuggingFaceTokenizer.Load(path));

        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void DeeplyNestedJson_FailsFast()
    {
        string path = Path.Combine(_dir, "deep.json");
        File.WriteAllText(path, "{\"model\":" + new string('[', 100_000) + new string(']', 100_000) + "}");

        var watch = Stopwatch.StartNew();
        var e = Assert.Throws<InvalidDataException>(() => HuggingFaceTokenizer.Load(path));

        Assert.Contains(path, e.Message);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2));
    }

    [Fact]
    public void MissingFile_IsFileNotFound() =>
        Assert.Throws<FileNotFoundException>(() => HuggingFaceTokenizer.Load(Path.Combine(_dir, "none", "tokenizer.json")));

    /// <summary>Random text over ASCII (without '&lt;'), Latin-1, combining marks, CJK, astral letters and emoji, and whitespace runs.</summary>
    internal static string RandomText(Random random)
    {
        string[] pools =
        [
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()[]{}-_=+*/\\|@#$%^&~`>",
            "   \t\n\n\r\n  ",
            "éèàüößçñÆØÅ¿¡",
            "\u0301\u0308\u0327\u20DD",
            "中文字符漢字かなカナ한국어",
        ];
        var sb = new StringBuilder();
        int length = random.Next(0, 40);
        for (int i = 0; i < length; i++)
        {
            int kind = random.Next(7);
            if (kind < pools.Length)
            {
                string pool = pools[kind];
                sb.Append(pool[random.Next(pool.Length)]);
            }
            else if (kind == 5)
            {
                sb.Append(char.ConvertFromUtf32(0x1D400 + random.Next(52)));
            }
            else
            {
                sb.Append(char.ConvertFromUtf32(0x1F600 + random.Next(64)));
            }
        }
        return sb.ToString();
    }
}
