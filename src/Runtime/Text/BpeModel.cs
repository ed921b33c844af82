using System.Collections.Concurrent;
using System.Text;

namespace PeftGen.Text;

/// <summary>
/// The BPE model of a Hugging Face <c>tokenizer.json</c>: a word (one pre-token) starts as one symbol per code point
/// (or per byte through <c>&lt;0xHH&gt;</c> tokens when <c>byte_fallback</c> is set), then the adjacent pair with the
/// lowest merge rank is merged, leftmost first among equal ranks, until no listed merge applies. Results are cached
/// per word, which is what makes encoding natural text fast: most words repeat.
/// </summary>
internal sealed class BpeModel
{
    /// <summary>Words longer than this are not cached (the whole text is one word when there is no pre-tokenizer).</summary>
    private const int MaxCachedWordLength = 256;

    /// <summary>The cache is emptied when it reaches this many words, bounding memory on endless streams of new words.</summary>
    private const int MaxCachedWords = 200_000;

    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocab;
    private readonly Dictionary<long, (int Rank, int MergedId)> _merges;
    private readonly int[] _byteFallbackIds;
    private readonly int _unkId;
    private readonly bool _fuseUnk;
    private readonly bool _ignoreMerges;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;

    /// <param name="vocab">Token string to id.</param>
    /// <param name="merges">(left id, right id) packed by <see cref="PairKey"/> to rank and merged id.</param>
    /// <param name="unkId">Id of the unknown token, or -1 when the model has none.</param>
    /// <param name="fuseUnk">Whether consecutive unknown symbols become one.</param>
    /// <param name="byteFallback">Whether code points outside the vocabulary become <c>&lt;0xHH&gt;</c> tokens.</param>
    /// <param name="ignoreMerges">Whether a word found whole in the vocabulary skips merging (Llama 3).</param>
    public BpeModel(Dictionary<string, int> vocab, Dictionary<long, (int Rank, int MergedId)> merges, int unkId,
        bool fuseUnk, bool byteFallback, bool ignoreMerges)
    {
        _vocab = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _merges = merges;
        _unkId = unkId;
        _fuseUnk = fuseUnk;
        _ignoreMerges = ignoreMerges;
        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        _byteFallbackIds = new int[256];
        for (int b = 0; b < 256; b++)
        {
            _byteFallbackIds[b] = byteFallback && vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }
    }

    /// <summary>Packs an ordered pair of token ids into a dictionary key.</summary>
    public static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>Appends the ids of one pre-token word.</summary>
    /// <exception cref="InvalidOperationException">A character has no token, no byte fallback and the model has no unknown token.</exception>
    public void EncodeWord(string word, List<int> output)
    {
        if (word.Length == 0)
        {
            return;
        }
        bool cacheable = word.Length <= MaxCachedWordLength;
        if (cacheable && _cacheLookup.TryGetValue(word.AsSpan(), out var cached))
        {
            output.AddRange(cached);
            return;
        }

        var ids = Tokenize(word);
        if (cacheable)
        {
            if (_cache.Count >= MaxCachedWords)
            {
                _cache.Clear();
            }
            _cache.TryAdd(word, ids);
        }
        output.AddRange(ids);
    }

    private int[] Tokenize(string word)
    {
        if (_ignoreMerges && _vocab.TryGetValue(word.AsSpan(), out int whole))
        {
            return [whole];
        }

        var symbols = new List<int>(word.Length);
        Span<byte> utf8 = stackalloc byte[4];
        bool previousWasUnk = false;
        for (int i = 0; i < word.Length;)
        {
            // Callers hand in well-formed UTF-16, so a high surrogate is always followed by its low half.
            int length = char.IsHighSurrogate(word[i]) ? 2 : 1;
            var piece = word.AsSpan(i, length);
            if (_vocab.TryGetValue(piece, out int id))
            {
                symbols.Add(id);
                previousWasUnk = false;
            }
            else if (TryAddByteFallback(piece, symbols, utf8))
            {
                previousWasUnk = false;
            }
            else if (_unkId >= 0)
            {
                if (!(_fuseUnk && previousWasUnk))
                {
                    symbols.Add(_unkId);
                }
                previousWasUnk = true;
            }
            else
            {
                // Hugging Face drops such characters silently; failing keeps decode(encode(s)) == s honest.
                throw new InvalidOperationException(
                    $"U+{char.ConvertToUtf32(word, i):X4} has no token, the vocabulary has no <0xHH> byte-fallback tokens for it and the model has no unk_token.");
            }
            i += length;
        }
        return Merge(symbols);
    }

    /// <summary>Adds one <c>&lt;0xHH&gt;</c> token per UTF-8 byte, only when all of them exist (as Hugging Face does).</summary>
    private bool TryAddByteFallback(ReadOnlySpan<char> piece, List<int> symbols, Span<byte> utf8)
    {
        if (_byteFallbackIds[0] < 0 && _byteFallbackIds[255] < 0)
        {
            return false;
        }
        Rune.DecodeFromUtf16(piece, out var rune, out _);
        int count = rune.EncodeToUtf8(utf8);
        foreach (byte b in utf8[..count])
        {
            if (_byteFallbackIds[b] < 0)
            {
                return false;
            }
        }
        foreach (byte b in utf8[..count])
        {
            symbols.Add(_byteFallbackIds[b]);
        }
        return true;
    }

    /// <summary>Merges lowest rank first (see <see cref="PairMerger"/>).</summary>
    private int[] Merge(List<int> symbols) =>
        PairMerger.Merge(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(symbols), TryMerge);

    private bool TryMerge(int left, int right, out int merged, out double priority)
    {
        bool found = _merges.TryGetValue(PairKey(left, right), out var merge);
        (merged, priority) = (merge.MergedId, merge.Rank);
        return found;
    }
}
