using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace PeftGen.Benchmarks;

/// <summary>
/// Learns a GPT-2-style byte-level BPE tokenizer.json from a corpus, so the tokenizer benchmark runs on a realistic
/// vocabulary without downloading one. Plain BPE training: count adjacent symbol pairs over the pre-tokenized words
/// (weighted by word frequency) and merge the most frequent pair, updating only the words that contain it.
/// </summary>
internal static partial class ByteLevelBpe
{
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2Split();

    public static JsonObject Learn(string corpus, int merges)
    {
        var symbols = new List<string>();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) Add(ByteChar(b).ToString());

        var frequency = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (Match match in Gpt2Split().Matches(corpus))
            frequency[match.Value] = frequency.GetValueOrDefault(match.Value) + 1;
        var words = frequency.Select(w => (Symbols: Encoding.UTF8.GetBytes(w.Key).Select(b => (int)b).ToList(), Count: w.Value)).ToList();

        var pairs = new Dictionary<(int, int), long>();
        foreach (var word in words) Count(word.Symbols, word.Count, +1);

        var mergeList = new JsonArray();
        for (int m = 0; m < merges && pairs.Count > 0; m++)
        {
            var best = pairs.MaxBy(p => (p.Value, -p.Key.Item1, -p.Key.Item2)).Key;
            int merged = Add(symbols[best.Item1] + symbols[best.Item2]);
            mergeList.Add($"{symbols[best.Item1]} {symbols[best.Item2]}");
            foreach (var (word, count) in words)
            {
                if (!Contains(word, best)) continue;
                Count(word, count, -1);
                for (int i = 0; i < word.Count - 1; i++)
                {
                    if (word[i] == best.Item1 && word[i + 1] == best.Item2)
                    {
                        word[i] = merged;
                        word.RemoveAt(i + 1);
                    }
                }
                Count(word, count, +1);
            }
        }

        var vocab = new JsonObject();
        for (int i = 0; i < symbols.Count; i++) vocab[symbols[i]] = i;
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject
            {
                ["id"] = symbols.Count, ["content"] = "<|endoftext|>", ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = vocab, ["merges"] = mergeList,
            },
        };

        int Add(string symbol)
        {
            if (ids.TryGetValue(symbol, out int id)) return id;
            ids[symbol] = symbols.Count;
            symbols.Add(symbol);
            return symbols.Count - 1;
        }

        void Count(List<int> word, int count, int sign)
        {
            for (int i = 0; i < word.Count - 1; i++)
            {
                var key = (word[i], word[i + 1]);
                long value = pairs.GetValueOrDefault(key) + sign * (long)count;
                if (value == 0) pairs.Remove(key);
                else pairs[key] = value;
            }
        }
    }

    private static bool Contains(List<int> word, (int, int) pair)
    {
        for (int i = 0; i < word.Count - 1; i++)
            if (word[i] == pair.Item1 && word[i + 1] == pair.Item2) return true;
        return false;
    }

    // GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the rest move to U+0100 onwards.
    private static char ByteChar(int b)
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
}
