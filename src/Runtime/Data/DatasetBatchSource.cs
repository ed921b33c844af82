namespace PeftGen.Data;

/// <summary>
/// Training batches from tokenized examples, addressed by position: the batch at position p is a pure function of
/// the examples, the options, the seed and p, so a resumed run sees exactly the batches an uninterrupted one would.
/// </summary>
/// <remarks>
/// <para>
/// Rows: without packing, each example is one row (cut to <c>maxSequenceLength + 1</c> tokens). With packing, all
/// examples are concatenated in the given order and cut into rows of <c>maxSequenceLength + 1</c> tokens that overlap
/// by one, so every token after the first is a target exactly once. Packing does not isolate examples from each
/// other in attention (the batch has no document mask), but no example's first token is ever a target: predicting
/// the start of an unrelated example from the end of the previous one only teaches noise.
/// </para>
/// <para>
/// A row of n tokens gives n-1 inputs and, at each input position, the next token's label as target (-100 where it
/// is not scored). Epoch e = p / <see cref="BatchesPerEpoch"/> visits the rows in a permutation drawn from
/// (seed, e); the last batch of an epoch is completed with rows from the start of that epoch's order, so every
/// batch has <c>batchSize</c> rows. A batch size larger than the number of rows is capped at the number of rows (one
/// batch per epoch holding every row, as a PyTorch DataLoader would give), so memory follows the data, not the flag. Rows shorter than the batch's longest are padded with the pad id and -100.
/// </para>
/// </remarks>
public sealed class DatasetBatchSource : IBatchSource
{
    private readonly List<(int[] Tokens, int[] Labels)> _rows = [];
    private readonly int _batchSize;
    private readonly int _padId;
    private readonly ulong _seed;
    private readonly bool _shuffle;
    private long _cachedEpoch = -1;
    private int[] _cachedOrder = [];
    private long _position;

    /// <summary>Builds the rows of a batch source.</summary>
    /// <param name="examples">The examples.</param>
    /// <param name="batchSize">Rows per batch.</param>
    /// <param name="maxSequenceLength">Most input tokens per row.</param>
    /// <param name="seed">Seed of the per-epoch shuffle.</param>
    /// <param name="padId">Id that fills short rows (conventionally EOS, or 0).</param>
    /// <param name="pack">Whether to pack examples into full rows.</param>
    /// <param name="shuffle">Whether to shuffle rows each epoch; false keeps the given order.</param>
    /// <exception cref="ArgumentException">No example has two tokens, or an example's labels do not match its tokens.</exception>
    public DatasetBatchSource(IReadOnlyList<TokenizedExample> examples, int batchSize, int maxSequenceLength, int seed, int padId,
        bool pack = false, bool shuffle = true)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSequenceLength, 1);
        _batchSize = batchSize;
        _padId = padId;
        _seed = (ulong)(uint)seed;
        _shuffle = shuffle;
        MaxSequenceLength = maxSequenceLength;
        for (int i = 0; i < examples.Count; i++)
        {
            if (examples[i].Tokens.Length != examples[i].Labels.Length)
            {
                throw new ArgumentException($"Example {i} has {examples[i].Tokens.Length} tokens but {examples[i].Labels.Length} labels.", nameof(examples));
            }
        }

        if (pack)
        {
            BuildPackedRows(examples, maxSequenceLength);
        }
        else
        {
            foreach (var example in examples)
            {
                int length = Math.Min(example.Tokens.Length, maxSequenceLength + 1);
                if (length >= 2)
                {
                    _rows.Add((example.Tokens[..length], example.Labels[..length]));
                }
            }
        }
        if (_rows.Count == 0)
        {
            throw new ArgumentException("No example has the two tokens a row needs (one input and one target).", nameof(examples));
        }
        // A batch never holds more rows than the data has: a batch size above the row count gives one batch of every row
        // per epoch (as a PyTorch DataLoader without drop_last does), instead of allocating copies of the same rows.
        _batchSize = Math.Min(batchSize, _rows.Count);
        RequestedBatchSize = batchSize;
        BatchesPerEpoch = (_rows.Count + _batchSize - 1) / _batchSize;
    }

    /// <summary>Rows per batch: the batch size asked for, or the number of rows when there are fewer.</summary>
    public int BatchSize => _batchSize;

    /// <summary>The batch size asked for (larger than <see cref="BatchSize"/> when the data has fewer rows).</summary>
    public int RequestedBatchSize { get; }

    /// <summary>Number of rows (examples, or packed rows).</summary>
    public int RowCount => _rows.Count;

    /// <summary>Batches in one pass over the rows.</summary>
    public int BatchesPerEpoch { get; }

    /// <summary>Most input tokens per row, the largest batch length.</summary>
    public int MaxSequenceLength { get; }

    /// <inheritdoc />
    public long Position
    {
        get => _position;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _position = value;
        }
    }

    /// <inheritdoc />
    public Batch Next() => BatchAt(_position++);

    /// <summary>The batch at a position, without moving <see cref="Position"/>.</summary>
    /// <param name="position">The batch index, 0 or more.</param>
    /// <returns>The batch: <c>batchSize</c> rows, as long as the longest of them.</returns>
    public Batch BatchAt(long position)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        long epoch = position / BatchesPerEpoch;
        int first = (int)(position % BatchesPerEpoch) * _batchSize;
        var order = OrderOf(epoch);

        var rows = new (int[] Tokens, int[] Labels)[_batchSize];
        int length = 1;
        for (int r = 0; r < _batchSize; r++)
        {
            rows[r] = _rows[order[(first + r) % order.Length]];
            length = Math.Max(length, rows[r].Tokens.Length - 1);
        }

        var inputs = new int[_batchSize * length];
        var targets = new int[_batchSize * length];
        Array.Fill(inputs, _padId);
        Array.Fill(targets, JsonlDataset.IgnoreLabel);
        for (int r = 0; r < _batchSize; r++)
        {
            var (tokens, labels) = rows[r];
            tokens.AsSpan(0, tokens.Length - 1).CopyTo(inputs.AsSpan(r * length));
            labels.AsSpan(1).CopyTo(targets.AsSpan(r * length));
        }
        return new Batch(inputs, targets, _batchSize, length);
    }

    private int[] OrderOf(long epoch)
    {
        if (epoch != _cachedEpoch)
        {
            _cachedOrder = _shuffle
                ? SeededShuffle.Permutation(_rows.Count, _seed, (ulong)epoch + 1)
                : [.. Enumerable.Range(0, _rows.Count)];
            _cachedEpoch = epoch;
        }
        return _cachedOrder;
    }

    private void BuildPackedRows(IReadOnlyList<TokenizedExample> examples, int maxSequenceLength)
    {
        int total = examples.Sum(e => e.Tokens.Length);
        var tokens = new int[total];
        var labels = new int[total];
        int at = 0;
        foreach (var example in examples)
        {
            if (example.Tokens.Length == 0)
            {
                continue;
            }
            example.Tokens.CopyTo(tokens, at);
            example.Labels.CopyTo(labels, at);
            labels[at] = JsonlDataset.IgnoreLabel;
            at += example.Tokens.Length;
        }
        for (int start = 0; start + 1 < total; start += maxSequenceLength)
        {
            int end = Math.Min(start + maxSequenceLength + 1, total);
            _rows.Add((tokens[start..end], labels[start..end]));
        }
    }
}
