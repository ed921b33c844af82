using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftGen.Tests.Text;

/// <summary>Small hand-designed tokenizer.json files whose ids can be worked out on paper.</summary>
internal static class TestTokenizers
{
    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>GPT-2's byte-to-character map, written independently of the code under test.</summary>
    public static char ByteChar(int b)
    {
        int n = 0;
        for (int i = 0; i < 256; i++)
        {
            bool printable = i is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255;
            if (i == b) return printable ? (char)i : (char)(256 + n);
            if (!printable) n++;
        }
        throw new ArgumentOutOfRangeException(nameof(b));
    }

    /// <summary>
    /// Byte-level BPE: ids 0..255 are the bytes (id = byte value), then merges in rank order:
    /// Ġ t→256, h e→257, Ġt he→258, l o→259, lo w→260, e r→261, 3 4→262, a ð→263 (ð is byte F0, the first byte of
    /// an astral character). Added: &lt;|endoftext|&gt; 264, &lt;|im_start|&gt; 265, &lt;|im_end|&gt; 266 (special).
    /// </summary>
    public static JsonObject ByteLevel(string? splitPattern = null, bool swapHeAndEr = false)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteChar(b).ToString()] = b;
        string g = ByteChar(' ').ToString();
        var merges = new List<(string, string)>
        {
            (g, "t"), ("h", "e"), (g + "t", "he"), ("l", "o"), ("lo", "w"), ("e", "r"), ("3", "4"), ("a", ByteChar(0xF0).ToString()),
        };
        if (swapHeAndEr) (merges[1], merges[5]) = (merges[5], merges[1]);
        var mergeArray = new JsonArray();
        int next = 256;
        foreach (var (a, b) in merges)
        {
            vocab[a + b] = next++;
            // Alternate the two spellings so both are exercised.
            mergeArray.Add(next % 2 == 0 ? JsonValue.Create($"{a} {b}") : new JsonArray(a, b));
        }
        JsonNode preTokenizer = splitPattern is null
            ? new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true }
            : new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = splitPattern }, ["behavior"] = "Isolated", ["invert"] = false },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
            };
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(Added(264, "<|endoftext|>"), Added(265, "<|im_start|>"), Added(266, "<|im_end|>")),
            ["normalizer"] = null,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = vocab, ["merges"] = mergeArray,
            },
        };
    }

    /// <summary>
    /// SentencePiece-style BPE as in Llama 2: &lt;unk&gt; 0, &lt;s&gt; 1, &lt;/s&gt; 2, &lt;0x00&gt;..&lt;0xFF&gt; 3..258, then
    /// ▁ 259, h 260, e 261, l 262, o 263, w 264, r 265, d 266 and merges in rank order: h e→267, l l→268,
    /// ll o→269, ▁ he→270, ▁he llo→271, ▁ w→272, o r→273. With <paramref name="metaspace"/> the newer
    /// Metaspace(prepend_scheme "first") pre-tokenizer and decoder replace the Prepend/Replace normalizer.
    /// </summary>
    public static JsonObject SentencePiece(bool metaspace = false)
    {
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = 3 + b;
        int next = 259;
        foreach (var piece in new[] { "▁", "h", "e", "l", "o", "w", "r", "d" }) vocab[piece] = next++;
        var mergeArray = new JsonArray();
        foreach (var (a, b) in new[] { ("h", "e"), ("l", "l"), ("ll", "o"), ("▁", "he"), ("▁he", "llo"), ("▁", "w"), ("o", "r") })
        {
            vocab[a + b] = next++;
            mergeArray.Add($"{a} {b}");
        }
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(Added(0, "<unk>"), Added(1, "<s>"), Added(2, "</s>")),
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["fuse_unk"] = true, ["byte_fallback"] = true,
                ["vocab"] = vocab, ["merges"] = mergeArray,
            },
        };
        if (metaspace)
        {
            root["normalizer"] = null;
            root["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false };
            root["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" }),
            };
        }
        else
        {
            root["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
            };
            root["pre_tokenizer"] = null;
            root["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "▁" }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            };
        }
        return root;
    }

    /// <summary>Writes <paramref name="tokenizer"/> as tokenizer.json (and the config, when given) into a new folder under <paramref name="root"/>.</summary>
    public static string Write(string root, JsonObject tokenizer, JsonObject? config = null)
    {
        string dir = Path.Combine(root, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizer.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
        if (config is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
        return Path.Combine(dir, "tokenizer.json");
    }

    private static JsonObject Added(int id, string content) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
    };
}
