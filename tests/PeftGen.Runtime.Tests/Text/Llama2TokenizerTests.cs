using System.Text;
using System.Text.Json;
using PeftGen.Tests.TestSupport;
using PeftGen.Text;
using Xunit;

namespace PeftGen.Tests.Text;

public sealed class Llama2TokenizerTests : IDisposable
{
    private const int ByteFallbackOffset = 3;

    private readonly string _tempDir = Directory.CreateTempSubdirectory("peftgen-tokenizer-").FullName;

    public void Dispose() => Directory.Delete(_tempDir, recursive: true);

    // ------------------------------------------------------------------------------------------
    // The real tok512.bin of stories260K, checked against tests/golden/stories260k_golden.py.

    [StoriesFact]
    public void Tok512_LoadsWithTheModelsVocabSize()
    {
        var tokenizer = LoadTok512();

        Assert.Equal(512, tokenizer.VocabSize);
        Assert.Equal(1, tokenizer.BosId);
        Assert.Equal(2, tokenizer.EosId);
        Assert.Equal(7, tokenizer.MaxTokenLength);
        Assert.Equal("\n<s>\n", tokenizer.GetPiece(1));
        Assert.Equal("<0x00>", tokenizer.GetPiece(ByteFallbackOffset));
        Assert.Equal("<0xFF>", tokenizer.GetPiece(ByteFallbackOffset + 255));
        Assert.True(tokenizer.TryGetId(" Lily", out int lily));
        Assert.Equal(" Lily", tokenizer.GetPiece(lily));
    }

    [StoriesFact]
    public void Tok512_LoadWithoutVocabSizeReadsEveryToken()
    {
        var tokenizer = Llama2Tokenizer.Load(SharedModels.Stories260KTokenizer!);

        Assert.Equal(512, tokenizer.VocabSize);
    }

    [StoriesTheory]
    [MemberData(nameof(GoldenEncodeCases))]
    public void Tok512_EncodeMatchesGolden(string text, int[] expectedIds)
    {
        var tokenizer = LoadTok512();

        Assert.Equal(expectedIds, tokenizer.Encode(text, addBos: false));
        Assert.Equal([tokenizer.BosId, .. expectedIds], tokenizer.Encode(text));
        Assert.Equal([tokenizer.BosId, .. expectedIds, tokenizer.EosId], tokenizer.Encode(text, addBos: true, addEos: true));
    }

    [StoriesTheory]
    [MemberData(nameof(GoldenEncodeCases))]
    public void Tok512_DecodeInvertsEncodeOnGoldenCases(string text, int[] expectedIds)
    {
        var tokenizer = LoadTok512();

        Assert.Equal(text, tokenizer.Decode(expectedIds));
        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }

    [StoriesFact]
    public void Tok512_EncodesGoldenPrompt()
    {
        var prompt = Golden.RootElement.GetProperty("prompt");

        var ids = LoadTok512().Encode(prompt.GetProperty("text").GetString()!);

        Assert.Equal(IntArray(prompt.GetProperty("ids")), ids);
    }

    [StoriesFact]
    public void Tok512_DecodeInvertsEncodeOnRandomUnicode()
    {
        var tokenizer = LoadTok512();
        var random = new Random(20240601);

        for (int i = 0; i < 300; i++)
        {
            string text = RandomText(random, random.Next(0, 60));

            // The dummy-prefix space that Encode adds is the one Decode strips, with or without BOS.
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text, addBos: false)));
        }
    }

    [StoriesFact]
    public void Tok512_GreedyIdsDecodeToGoldenText()
    {
        var tokenizer = LoadTok512();
        int[] ids = IntArray(Golden.RootElement.GetProperty("greedy_from_bos"));
        string expected = Golden.RootElement.GetProperty("greedy_text").GetString()!;

        Assert.StartsWith("Once upon a time, there was a little girl named Lily.", expected);
        Assert.Equal(expected, tokenizer.Decode(ids));
        Assert.Equal(expected, tokenizer.Decode([tokenizer.BosId, .. ids]));

        // Streaming token by token, as a generation loop prints, gives the same text.
        var streamed = new StringBuilder();
        var streamedPieces = new StringBuilder();
        var utf8 = Encoding.UTF8.GetDecoder();
        int previous = tokenizer.BosId;
        foreach (int id in ids)
        {
            var bytes = tokenizer.DecodePieceUtf8(previous, id);
            var chars = new char[utf8.GetCharCount(bytes, flush: false)];
            utf8.GetChars(bytes, chars, flush: false);
            streamed.Append(chars);
            streamedPieces.Append(tokenizer.DecodePiece(previous, id));
            previous = id;
        }
        Assert.Equal(expected, streamed.ToString());
        Assert.Equal(expected, streamedPieces.ToString());
    }

    [StoriesFact]
    public void Tok512_EncodesHundredKilobytesInOnePass()
    {
        var tokenizer = LoadTok512();
        var random = new Random(7);
        string[] words = ["Once", "upon", "a", "time", "Lily", "and", "Tim", "played", "in", "the", "park.", "\n", "café", "日本", "🙂", "!"];
        var story = new StringBuilder();
        while (story.Length < 100_000)
        {
            story.Append(words[random.Next(words.Length)]).Append(' ');
        }

        // A realistic text and a degenerate run of one letter, whose merges all tie on score.
        foreach (string text in new[] { story.ToString(), new string('a', 100_000) })
        {
            int[] ids = tokenizer.Encode(text);

            // At most BOS, the dummy prefix and one token per UTF-8 byte.
            Assert.InRange(ids.Length, 2, Encoding.UTF8.GetByteCount(text) + 2);
            Assert.Equal(text, tokenizer.Decode(ids));
        }
    }

    [StoriesFact]
    public void Tok512_DecodeRejectsIdsOutsideTheVocabulary()
    {
        var tokenizer = LoadTok512();

        var tooLarge = Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([1, 512]));
        Assert.Contains("512 tokens", tooLarge.Message);
        Assert.Contains("Token id 512", tooLarge.Message);
        var negative = Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.DecodePiece(1, -1));
        Assert.Contains("Token id -1", negative.Message);
    }

    // ------------------------------------------------------------------------------------------
    // Small tokenizers written by the tests, for the encoder's rules and the loader's checks.

    [Fact]
    public void Encode_MergesTheHighestScoringPairFirst()
    {
        var tokenizer = LoadSmall(("a", -10), ("b", -11), ("c", -12), ("ab", -5), ("bc", -1));

        // "bc" outscores "ab", and once it is taken "ab" can no longer form.
        Assert.Equal(Ids(tokenizer, " ", "a", "bc"), tokenizer.Encode("abc", addBos: false));
    }

    [Fact]
    public void Encode_BreaksScoreTiesLeftmostFirst()
    {
        var tokenizer = LoadSmall(("a", -10), ("b", -11), ("ab", -3), ("ba", -3), ("aa", -3));

        Assert.Equal(Ids(tokenizer, " ", "ab", "a"), tokenizer.Encode("aba", addBos: false));
        Assert.Equal(Ids(tokenizer, " ", "ba", "b"), tokenizer.Encode("bab", addBos: false));
        Assert.Equal(Ids(tokenizer, " ", "aa", "a"), tokenizer.Encode("aaa", addBos: false));
        Assert.Equal(Ids(tokenizer, " ", "aa", "aa"), tokenizer.Encode("aaaa", addBos: false));
    }

    [Fact]
    public void Encode_MergesRepeatedlyIntoLongerPieces()
    {
        var tokenizer = LoadSmall(("a", -10), ("b", -11), (" a", -1), (" ab", -2), ("ab", -3));

        // " " + "a" first, then " a" + "b"; the dummy prefix takes part like any other piece.
        Assert.Equal(Ids(tokenizer, " ab", " ab"), tokenizer.Encode("ab ab", addBos: false));
    }

    [Fact]
    public void Encode_NeverMergesIntoPiecesScoredAtTheLlama2cFloor()
    {
        var floor = LoadSmall(("x", -1), ("y", -1), ("xy", -1e10f));
        var aboveFloor = LoadSmall(("x", -1), ("y", -1), ("xy", -9.9e9f));

        Assert.Equal(Ids(floor, " ", "x", "y"), floor.Encode("xy", addBos: false));
        Assert.Equal(Ids(aboveFloor, " ", "xy"), aboveFloor.Encode("xy", addBos: false));
    }

    [Fact]
    public void Encode_FallsBackToUtf8BytesForCodePointsWithoutAPiece()
    {
        var tokenizer = LoadSmall(("a", -1), ("é", -2));

        // é has a piece; ï (C3 AF) and 🙂 (F0 9F 99 82) do not.
        int[] expected = [.. Ids(tokenizer, " ", "é", "a"), 0xC3 + 3, 0xAF + 3, 0xF0 + 3, 0x9F + 3, 0x99 + 3, 0x82 + 3];
        int[] ids = tokenizer.Encode("éaï🙂", addBos: false);

        Assert.Equal(expected, ids);
        Assert.Equal("éaï🙂", tokenizer.Decode(ids));
    }

    [Fact]
    public void Encode_EmptyTextGetsNoDummyPrefix()
    {
        var tokenizer = LoadSmall();

        Assert.Empty(tokenizer.Encode("", addBos: false));
        Assert.Equal([1], tokenizer.Encode(""));
        Assert.Equal([1, 2], tokenizer.Encode("", addBos: true, addEos: true));
        Assert.Equal("", tokenizer.Decode([]));
    }

    [Fact]
    public void Encode_RejectsUnpairedSurrogates()
    {
        var tokenizer = LoadSmall();

        var error = Assert.Throws<ArgumentException>(() => tokenizer.Encode("ok\uD800ok"));
        Assert.Contains("index 2", error.Message);
    }

    [Fact]
    public void Encode_WithoutByteFallbackPiecesRejectsUnknownCharacters()
    {
        string path = WriteTokenizer("no-bytes.bin", [("<unk>", 0), ("\n<s>\n", 0), ("\n</s>\n", 0), (" ", 0), ("a", 0)]);
        var tokenizer = Llama2Tokenizer.Load(path);

        Assert.Equal([1, 3, 4], tokenizer.Encode("a"));
        var error = Assert.Throws<InvalidOperationException>(() => tokenizer.Encode("ab"));
        Assert.Contains("U+0062", error.Message);
    }

    [Fact]
    public void DecodePiece_StripsTheLeadingSpaceOnlyAfterBos()
    {
        var tokenizer = LoadSmall((" a", -1), ("\u00A0b", -1));
        int spaceA = Ids(tokenizer, " a")[0];

        Assert.Equal("a", tokenizer.DecodePiece(tokenizer.BosId, spaceA));
        Assert.Equal(" a", tokenizer.DecodePiece(spaceA, spaceA));
        Assert.Equal(" a", tokenizer.DecodePiece(-1, spaceA));
        Assert.Equal("", tokenizer.DecodePiece(spaceA, tokenizer.BosId));
        // Only a plain space is the dummy prefix.
        Assert.Equal("\u00A0b", tokenizer.DecodePiece(tokenizer.BosId, Ids(tokenizer, "\u00A0b")[0]));
        // A BOS in the middle delimits a new sequence, as in llama2.c.
        Assert.Equal("a aa", tokenizer.Decode([spaceA, spaceA, tokenizer.BosId, spaceA]));
    }

    [Fact]
    public void Decode_JoinsBytesOfACharacterSplitOverByteTokens()
    {
        var tokenizer = LoadSmall();
        int[] euro = [0xE2 + 3, 0x82 + 3, 0xAC + 3];

        Assert.Equal("€", tokenizer.Decode(euro));
        Assert.Equal(new byte[] { 0xE2 }, tokenizer.DecodePieceUtf8(tokenizer.BosId, euro[0]).ToArray());
        // Alone, part of a character is not text.
        Assert.Equal("\uFFFD", tokenizer.DecodePiece(tokenizer.BosId, euro[0]));
        Assert.Equal("\n", tokenizer.DecodePiece(tokenizer.BosId, '\n' + 3));
    }

    [Fact]
    public void Load_ReadsScoresPiecesAndHeader()
    {
        string path = WriteTokenizer("small.bin", [.. BaseVocabulary(), ("hello", -42.5f)], maxTokenLength: 9);

        var tokenizer = Llama2Tokenizer.Load(path);

        Assert.Equal(ByteFallbackOffset + 256 + 2, tokenizer.VocabSize);
        Assert.Equal(9, tokenizer.MaxTokenLength);
        Assert.Equal("hello", tokenizer.GetPiece(tokenizer.VocabSize - 1));
        Assert.Equal(-42.5f, tokenizer.GetScore(tokenizer.VocabSize - 1));
        Assert.False(tokenizer.TryGetId("absent", out int missing));
        Assert.Equal(-1, missing);
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.GetPiece(tokenizer.VocabSize));
    }

    [Fact]
    public void Load_WithVocabSizeIgnoresTrailingTokens()
    {
        string path = WriteTokenizer("trailing.bin", [.. BaseVocabulary(), ("extra", -1)]);
        int baseSize = ByteFallbackOffset + 256 + 1;

        var tokenizer = Llama2Tokenizer.Load(path, baseSize);

        Assert.Equal(baseSize, tokenizer.VocabSize);
        Assert.False(tokenizer.TryGetId("extra", out _));
    }

    [Fact]
    public void Load_RejectsTruncatedHeader()
    {
        string path = WriteBytes("short-header.bin", [7, 0]);

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("byte offset 0", error.Message);
        Assert.Contains("max_token_length", error.Message);
    }

    [Fact]
    public void Load_RejectsTruncatedScore()
    {
        string path = WriteBytes("short-score.bin", [.. Int32(4), .. Token(0, "<unk>"), 0, 0]);

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("byte offset 17", error.Message);
        Assert.Contains("score of token 1", error.Message);
    }

    [Fact]
    public void Load_RejectsTruncatedPiece()
    {
        byte[] token = Token(0, "<unk>");
        string path = WriteBytes("short-piece.bin", [.. Int32(5), .. token[..^2]]);

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("byte offset 8", error.Message);
        Assert.Contains("piece length of 5 bytes but only 3 bytes are left", error.Message);
    }

    [Fact]
    public void Load_RejectsNegativePieceLength()
    {
        string path = WriteBytes("negative.bin", [.. Int32(5), .. Single(0), .. Int32(-3), .. "abc"u8]);

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("byte offset 8", error.Message);
        Assert.Contains("negative piece length -3", error.Message);
    }

    [Fact]
    public void Load_RejectsPieceLengthBeyondTheFileWithoutAllocatingIt()
    {
        string path = WriteBytes("huge.bin", [.. Int32(5), .. Single(0), .. Int32(int.MaxValue), .. "abc"u8]);

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains($"piece length of {int.MaxValue} bytes", error.Message);
    }

    [Fact]
    public void Load_RejectsVocabSizeLargerThanTheFileCanHold()
    {
        string path = WriteTokenizer("few.bin", BaseVocabulary());

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path, 1_000_000_000));
        Assert.Contains(path, error.Message);
        Assert.Contains("1000000000 tokens", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Llama2Tokenizer.Load(path, 2));
    }

    [Fact]
    public void Load_RejectsFilesWithoutTheDummyPrefixPiece()
    {
        string path = WriteTokenizer("no-space.bin", [("<unk>", 0), ("\n<s>\n", 0), ("\n</s>\n", 0), ("a", 0)]);

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("\" \"", error.Message);
    }

    [Fact]
    public void Load_RejectsPiecesThatAreNotUtf8()
    {
        string path = WriteBytes("latin1.bin",
            [.. Int32(5), .. Token(0, "<unk>"), .. Single(0), .. Int32(2), 0xC3, 0x28]);

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("byte offset 25", error.Message);
        Assert.Contains("not valid UTF-8", error.Message);
    }

    [Fact]
    public void Load_RejectsFilesWithFewerThanThreeTokens()
    {
        string path = WriteTokenizer("two.bin", [("<unk>", 0), (" ", 0)]);

        var error = Assert.Throws<InvalidDataException>(() => Llama2Tokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("2 tokens", error.Message);
    }

    // ------------------------------------------------------------------------------------------
    // Helpers

    private static readonly Lazy<JsonDocument> GoldenDocument =
        new(() => JsonDocument.Parse(File.ReadAllText(SharedModels.GoldenFile("stories260K.json"))));

    private static JsonDocument Golden => GoldenDocument.Value;

    public static TheoryData<string, int[]> GoldenEncodeCases()
    {
        var cases = new TheoryData<string, int[]>();
        foreach (var entry in Golden.RootElement.GetProperty("encode_cases").EnumerateArray())
        {
            cases.Add(entry.GetProperty("text").GetString()!, IntArray(entry.GetProperty("ids")));
        }
        return cases;
    }

    private static int[] IntArray(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetInt32())];

    private static Llama2Tokenizer LoadTok512() => Llama2Tokenizer.Load(SharedModels.Stories260KTokenizer!, 512);

    private static int[] Ids(Llama2Tokenizer tokenizer, params string[] pieces) =>
        [.. pieces.Select(piece => tokenizer.TryGetId(piece, out int id) ? id : throw new ArgumentException($"no piece '{piece}'"))];

    /// <summary>Random text mixing the cases an encoder can get wrong: spaces, newlines, accents, CJK, astral characters.</summary>
    private static string RandomText(Random random, int parts)
    {
        string[] words = ["Once", "upon", "a", "time", "the", "Lily", "was", "happy", "played"];
        var text = new StringBuilder();
        for (int i = 0; i < parts; i++)
        {
            switch (random.Next(9))
            {
                case 0: text.Append(' ', random.Next(1, 4)); break;
                case 1: text.Append(random.Next(2) == 0 ? "\n" : "\r\n\t"); break;
                case 2: text.Append((char)random.Next(0x20, 0x7F)); break;
                case 3: text.Append(words[random.Next(words.Length)]); break;
                case 4: text.Append((char)random.Next(0xA0, 0x250)); break;
                case 5: text.Append((char)random.Next(0x4E00, 0xA000)); break;
                case 6: text.Append(char.ConvertFromUtf32(random.Next(0x1F300, 0x1FB00))); break;
                case 7: text.Append(char.ConvertFromUtf32(random.Next(0x10000, 0x110000))); break;
                default:
                    int bmp = random.Next(0x80, 0xFFFE - 0x800);
                    text.Append((char)(bmp < 0xD800 ? bmp : bmp + 0x800)); // skip the surrogate block
                    break;
            }
        }
        return text.ToString();
    }

    /// <summary>&lt;unk&gt;, BOS, EOS, the 256 byte pieces and the dummy-prefix space, as in llama2.c tokenizers.</summary>
    private static IEnumerable<(string Piece, float Score)> BaseVocabulary()
    {
        yield return ("<unk>", 0);
        yield return ("\n<s>\n", 0);
        yield return ("\n</s>\n", 0);
        for (int b = 0; b < 256; b++)
        {
            yield return ($"<0x{b:X2}>", 0);
        }
        yield return (" ", -100);
    }

    private Llama2Tokenizer LoadSmall(params (string Piece, float Score)[] extra) =>
        Llama2Tokenizer.Load(WriteTokenizer($"small-{Guid.NewGuid():N}.bin", [.. BaseVocabulary(), .. extra]));

    private string WriteTokenizer(string name, IEnumerable<(string Piece, float Score)> tokens, int maxTokenLength = 16)
    {
        var bytes = new List<byte>(Int32(maxTokenLength));
        foreach (var (piece, score) in tokens)
        {
            bytes.AddRange(Token(score, piece));
        }
        return WriteBytes(name, [.. bytes]);
    }

    private string WriteBytes(string name, byte[] bytes)
    {
        string path = Path.Combine(_tempDir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[] Token(float score, string piece)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(piece);
        return [.. Single(score), .. Int32(utf8.Length), .. utf8];
    }

    private static byte[] Int32(int value) => BitConverter.IsLittleEndian ? BitConverter.GetBytes(value) : [.. BitConverter.GetBytes(value).Reverse()];

    private static byte[] Single(float value) => Int32(BitConverter.SingleToInt32Bits(value));
}
