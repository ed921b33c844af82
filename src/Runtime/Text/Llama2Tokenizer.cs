using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace PeftGen.Text;

/// <summary>
/// The SentencePiece-derived BPE tokenizer of llama2.c (<c>tokenizer.bin</c>, <c>tok512.bin</c>, ...),
/// producing exactly the ids llama2.c's <c>run.c</c> produces.
/// </summary>
/// <remarks>
/// <para>
/// File format, little-endian: <c>int32 max_token_length</c>, then for each token <c>float32 score</c>,
/// <c>int32 length</c> and <c>length</c> bytes of UTF-8 piece. Pieces use a plain space where SentencePiece
/// uses U+2581. Ids 0, 1 and 2 are <c>&lt;unk&gt;</c>, BOS and EOS; ids 3..258 are the byte-fallback
/// pieces <c>&lt;0x00&gt;</c>..<c>&lt;0xFF&gt;</c>.
/// </para>
/// <para>
/// Encoding: a non-empty text gets the piece <c>" "</c> prepended (SentencePiece's dummy prefix); each code
/// point becomes its piece, or one byte-fallback token per UTF-8 byte when it has none; then the adjacent
/// pair whose concatenated piece has the highest score is merged, leftmost first on ties, until no pair
/// merges. Instances are immutable and safe to use from several threads.
/// </para>
/// </remarks>
public sealed class Llama2Tokenizer : ITokenizer
{
    private const int UnknownId = 0;
    private const int BeginOfSequenceId = 1;
    private const int EndOfSequenceId = 2;

    /// <summary>Byte b has the fallback token id b + 3, after &lt;unk&gt;, BOS and EOS.</summary>
    private const int ByteFallbackOffset = 3;

    /// <summary>
    /// run.c seeds its best-merge search with this score and only takes strictly better pairs,
    /// so a piece scored at or below it (or NaN) is never produced by a merge.
    /// </summary>
    private const float MergeScoreFloor = -1e10f;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Every byte value once, so a raw-byte token can be handed out as a one-byte span.</summary>
    private static readonly byte[] AllBytes = CreateAllBytes();

    private readonly string[] _pieces;
    private readonly byte[][] _pieceUtf8;
    private readonly float[] _scores;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _idsByPiece;
    private readonly int _dummyPrefixId;
    private readonly int _longestPieceChars;
    private readonly bool _hasByteFallback;

    private Llama2Tokenizer(string[] pieces, byte[][] pieceUtf8, float[] scores, int maxTokenLength, string path)
    {
        _pieces = pieces;
        _pieceUtf8 = pieceUtf8;
        _scores = scores;
        MaxTokenLength = maxTokenLength;

        // run.c binary-searches a sorted copy of the vocabulary; real vocabularies have no duplicate
        // pieces, and where one does, the lowest id wins here.
        var ids = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int id = 0; id < pieces.Length; id++)
        {
            ids.TryAdd(pieces[id], id);
            _longestPieceChars = Math.Max(_longestPieceChars, pieces[id].Length);
        }
        _idsByPiece = ids.GetAlternateLookup<ReadOnlySpan<char>>();

        if (!ids.TryGetValue(" ", out _dummyPrefixId))
        {
            throw new InvalidDataException(
                $"Tokenizer file '{path}' has no piece \" \", the dummy prefix llama2.c puts before every non-empty text.");
        }

        _hasByteFallback = pieces.Length >= ByteFallbackOffset + 256;
        for (int b = 0; b < 256 && _hasByteFallback; b++)
        {
            _hasByteFallback = pieces[ByteFallbackOffset + b] == $"<0x{b:X2}>";
        }
    }

    /// <inheritdoc />
    public int VocabSize => _pieces.Length;

    /// <inheritdoc />
    public int BosId => BeginOfSequenceId;

    /// <inheritdoc />
    public int EosId => EndOfSequenceId;

    /// <summary>Id of the <c>&lt;unk&gt;</c> token.</summary>
    public int UnkId => UnknownId;

    /// <summary>The longest piece in bytes, as recorded in the file header.</summary>
    public int MaxTokenLength { get; }

    /// <summary>
    /// Loads the first <paramref name="vocabSize"/> tokens of a llama2.c tokenizer file; the vocabulary size
    /// comes from the model header. Bytes after the last token are ignored, as llama2.c does.
    /// </summary>
    /// <param name="path">Path of the tokenizer file.</param>
    /// <param name="vocabSize">Number of tokens to read; at least 3 (&lt;unk&gt;, BOS, EOS).</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vocabSize"/> is below 3.</exception>
    /// <exception cref="InvalidDataException">The file is truncated or malformed; the message names the file and the byte offset.</exception>
    public static Llama2Tokenizer Load(string path, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, ByteFallbackOffset);
        return Read(path, vocabSize);
    }

    /// <summary>Loads every token of a llama2.c tokenizer file, reading until the end of the file.</summary>
    /// <param name="path">Path of the tokenizer file.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="InvalidDataException">The file is truncated or malformed; the message names the file and the byte offset.</exception>
    public static Llama2Tokenizer Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return Read(path, vocabSize: null);
    }

    /// <summary>The piece of a token as stored in the file, e.g. <c>" the"</c> or <c>"&lt;0x0A&gt;"</c>.</summary>
    /// <param name="id">The token id.</param>
    /// <returns>The piece.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="id"/> is outside the vocabulary.</exception>
    public string GetPiece(int id)
    {
        ValidateId(id, nameof(id));
        return _pieces[id];
    }

    /// <summary>The merge score of a token; higher-scored pieces are merged first.</summary>
    /// <param name="id">The token id.</param>
    /// <returns>The score.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="id"/> is outside the vocabulary.</exception>
    public float GetScore(int id)
    {
        ValidateId(id, nameof(id));
        return _scores[id];
    }

    /// <summary>Finds the id of a piece (exact, ordinal match).</summary>
    /// <param name="piece">The piece, with a plain space for SentencePiece's U+2581.</param>
    /// <param name="id">The id when found; otherwise -1.</param>
    /// <returns>Whether the vocabulary has the piece.</returns>
    public bool TryGetId(ReadOnlySpan<char> piece, out int id)
    {
        if (_idsByPiece.TryGetValue(piece, out id))
        {
            return true;
        }
        id = -1;
        return false;
    }

    /// <inheritdoc />
    /// <exception cref="InvalidOperationException">
    /// The text needs byte fallback but this vocabulary has no <c>&lt;0xHH&gt;</c> pieces at ids 3..258.
    /// </exception>
    public int[] Encode(string text, bool addBos = true, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);

        var symbols = new List<int>(text.Length + 1);
        if (text.Length > 0)
        {
            symbols.Add(_dummyPrefixId);
        }
        AppendCodePoints(text, symbols);
        var merged = MergePairs(symbols);

        var result = new int[(addBos ? 1 : 0) + merged.Count + (addEos ? 1 : 0)];
        int at = 0;
        if (addBos)
        {
            result[at++] = BosId;
        }
        merged.CopyTo(result, at);
        if (addEos)
        {
            result[^1] = EosId;
        }
        return result;
    }

    /// <inheritdoc />
    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new ArrayBufferWriter<byte>(Math.Max(16, ids.Length * 4));
        // Decoding starts as if right after BOS, so the dummy-prefix space of the first piece goes away
        // whether or not the caller kept the BOS token.
        int previous = BosId;
        for (int i = 0; i < ids.Length; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), id,
                    $"Token id {id} at index {i} is outside the vocabulary of {VocabSize} tokens.");
            }
            bytes.Write(DecodePieceUtf8(previous, id));
            previous = id;
        }
        // One UTF-8 decode over all bytes joins characters that byte-fallback tokens split.
        return Encoding.UTF8.GetString(bytes.WrittenSpan);
    }

    /// <summary>
    /// The UTF-8 bytes one token adds to the output, as llama2.c's <c>decode(prev, token)</c> gives them:
    /// the piece loses its leading space when <paramref name="previousToken"/> is BOS, and a <c>&lt;0xHH&gt;</c>
    /// piece stands for the raw byte HH. BOS itself adds nothing. For streaming, feed these bytes to one
    /// <see cref="Decoder"/> from <see cref="Encoding.UTF8"/> so characters split over byte tokens come out whole.
    /// </summary>
    /// <param name="previousToken">The token before <paramref name="token"/>; only compared with BOS, so any value (such as -1 for none) is accepted.</param>
    /// <param name="token">The token to decode.</param>
    /// <returns>The bytes; valid until the tokenizer is collected.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="token"/> is outside the vocabulary.</exception>
    public ReadOnlySpan<byte> DecodePieceUtf8(int previousToken, int token)
    {
        ValidateId(token, nameof(token));
        if (token == BosId)
        {
            return [];
        }

        ReadOnlySpan<byte> piece = _pieceUtf8[token];
        // SentencePiece's decoder drops the space that the encoder's dummy prefix put at the start.
        if (previousToken == BosId && piece.Length > 0 && piece[0] == (byte)' ')
        {
            piece = piece[1..];
        }
        return TryParseBytePiece(piece, out byte value) ? AllBytes.AsSpan(value, 1) : piece;
    }

    /// <summary>
    /// The text one token adds to the output, for streaming generation; see <see cref="DecodePieceUtf8"/>.
    /// A raw-byte token that is only part of a UTF-8 character comes out as U+FFFD here; use
    /// <see cref="DecodePieceUtf8"/> with a <see cref="Decoder"/> to stream such output exactly.
    /// </summary>
    /// <param name="previousToken">The token before <paramref name="token"/>; only compared with BOS.</param>
    /// <param name="token">The token to decode.</param>
    /// <returns>The text.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="token"/> is outside the vocabulary.</exception>
    public string DecodePiece(int previousToken, int token) => Encoding.UTF8.GetString(DecodePieceUtf8(previousToken, token));

    /// <summary>Adds one token per code point, or one byte-fallback token per UTF-8 byte of a code point with no piece.</summary>
    private void AppendCodePoints(string text, List<int> symbols)
    {
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < text.Length;)
        {
            if (Rune.DecodeFromUtf16(text.AsSpan(i), out Rune rune, out int length) != OperationStatus.Done)
            {
                throw new ArgumentException($"The text has an unpaired surrogate at index {i}, so it has no UTF-8 form.", nameof(text));
            }

            if (_idsByPiece.TryGetValue(text.AsSpan(i, length), out int id))
            {
                symbols.Add(id);
            }
            else
            {
                if (!_hasByteFallback)
                {
                    throw new InvalidOperationException(
                        $"U+{rune.Value:X4} at index {i} has no piece, and this vocabulary of {VocabSize} tokens has no byte-fallback pieces <0x00>..<0xFF> at ids 3..258.");
                }
                int byteCount = rune.EncodeToUtf8(utf8);
                foreach (byte b in utf8[..byteCount])
                {
                    symbols.Add(b + ByteFallbackOffset);
                }
            }
            i += length;
        }
    }

    /// <summary>Applies run.c's merge rule: best score first, leftmost on ties (see <see cref="PairMerger"/>).</summary>
    private List<int> MergePairs(List<int> symbols)
    {
        var concatenation = new char[2 * _longestPieceChars];
        return [.. PairMerger.Merge(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(symbols), TryMerge)];

        bool TryMerge(int left, int right, out int merged, out double priority)
        {
            string a = _pieces[left], b = _pieces[right];
            a.CopyTo(concatenation);
            b.CopyTo(concatenation.AsSpan(a.Length));
            bool found = _idsByPiece.TryGetValue(concatenation.AsSpan(0, a.Length + b.Length), out merged) && _scores[merged] > MergeScoreFloor;
            priority = found ? -(double)_scores[merged] : 0;
            return found;
        }
    }

    /// <summary>Whether a piece is a byte token <c>&lt;0xHH&gt;</c>, and which byte.</summary>
    private static bool TryParseBytePiece(ReadOnlySpan<byte> piece, out byte value)
    {
        value = 0;
        if (piece.Length != 6 || !piece.StartsWith("<0x"u8) || piece[5] != (byte)'>')
        {
            return false;
        }
        int high = HexDigit(piece[3]), low = HexDigit(piece[4]);
        if (high < 0 || low < 0)
        {
            return false;
        }
        value = (byte)(high * 16 + low);
        return true;
    }

    private static int HexDigit(byte c) => c switch
    {
        >= (byte)'0' and <= (byte)'9' => c - '0',
        >= (byte)'A' and <= (byte)'F' => c - 'A' + 10,
        >= (byte)'a' and <= (byte)'f' => c - 'a' + 10,
        _ => -1,
    };

    private static byte[] CreateAllBytes()
    {
        var bytes = new byte[256];
        for (int i = 0; i < bytes.Length; i++)
        {
            bytes[i] = (byte)i;
        }
        return bytes;
    }

    private void ValidateId(int id, string paramName)
    {
        if ((uint)id >= (uint)VocabSize)
        {
            throw new ArgumentOutOfRangeException(paramName, id, $"Token id {id} is outside the vocabulary of {VocabSize} tokens.");
        }
    }

    /// <summary>
    /// Reads <paramref name="vocabSize"/> tokens, or every token up to the end of the file when it is null.
    /// Every length is checked against the bytes left in the file before anything is allocated.
    /// </summary>
    private static Llama2Tokenizer Read(string path, int? vocabSize)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 64 * 1024);
        var reader = new TokenizerFileReader(stream, path);

        int maxTokenLength = reader.ReadInt32("max_token_length");
        if (maxTokenLength < 0)
        {
            throw reader.Corrupt(0, $"max_token_length is {maxTokenLength}");
        }

        // Each token takes at least 8 bytes (score and length), which bounds the count before allocating.
        long tokensThatFit = reader.Remaining / 8;
        if (vocabSize is int wanted && wanted > tokensThatFit)
        {
            throw reader.Corrupt(reader.Position,
                $"{wanted} tokens were asked for but the {reader.Remaining} bytes left hold at most {tokensThatFit}");
        }
        int capacity = vocabSize ?? (int)Math.Min(tokensThatFit, int.MaxValue);

        var pieces = new List<string>(capacity);
        var pieceUtf8 = new List<byte[]>(capacity);
        var scores = new List<float>(capacity);
        while (vocabSize is int count ? pieces.Count < count : reader.Remaining > 0)
        {
            int id = pieces.Count;
            scores.Add(reader.ReadSingle($"the score of token {id}"));
            long lengthOffset = reader.Position;
            int length = reader.ReadInt32($"the piece length of token {id}");
            if (length < 0)
            {
                throw reader.Corrupt(lengthOffset, $"token {id} has a negative piece length {length}");
            }
            if (length > reader.Remaining)
            {
                throw reader.Corrupt(lengthOffset,
                    $"token {id} has a piece length of {length} bytes but only {reader.Remaining} bytes are left");
            }

            long pieceOffset = reader.Position;
            var bytes = reader.ReadBytes(length);
            try
            {
                pieces.Add(StrictUtf8.GetString(bytes));
            }
            catch (DecoderFallbackException)
            {
                throw reader.Corrupt(pieceOffset, $"the piece of token {id} is not valid UTF-8");
            }
            pieceUtf8.Add(bytes);
        }

        if (pieces.Count < ByteFallbackOffset)
        {
            throw reader.Corrupt(reader.Position, $"the file has {pieces.Count} tokens, fewer than the 3 of <unk>, BOS and EOS");
        }
        return new Llama2Tokenizer([.. pieces], [.. pieceUtf8], [.. scores], maxTokenLength, path);
    }

    /// <summary>Little-endian reads that report the file and byte offset of anything missing.</summary>
    private sealed class TokenizerFileReader(Stream stream, string path)
    {
        private readonly long _length = stream.Length;
        private readonly byte[] _word = new byte[4];

        public long Position { get; private set; }

        public long Remaining => _length - Position;

        public int ReadInt32(string what) => BinaryPrimitives.ReadInt32LittleEndian(ReadWord(what));

        public float ReadSingle(string what) => BinaryPrimitives.ReadSingleLittleEndian(ReadWord(what));

        public byte[] ReadBytes(int count)
        {
            var bytes = new byte[count];
            stream.ReadExactly(bytes);
            Position += count;
            return bytes;
        }

        public InvalidDataException Corrupt(long offset, string what) =>
            new($"Tokenizer file '{path}' is malformed at byte offset {offset}: {what}.");

        private byte[] ReadWord(string what)
        {
            if (Remaining < _word.Length)
            {
                throw Corrupt(Position, $"the file ends ({_length} bytes) before {what} is complete");
            }
            stream.ReadExactly(_word);
            Position += _word.Length;
            return _word;
        }
    }
}
