namespace PeftGen.Data;

/// <summary>
/// A deterministic stream of batches addressed by position, so a checkpoint can record where training stood and
/// a resumed run continues with exactly the batches an uninterrupted run would have seen.
/// </summary>
public interface IBatchSource
{
    /// <summary>Index of the next batch <see cref="Next"/> returns.</summary>
    long Position { get; set; }

    /// <summary>Returns the batch at <see cref="Position"/> and advances it.</summary>
    Batch Next();
}

/// <summary>Batch sources built from functions.</summary>
public static class BatchSource
{
    /// <summary>A source whose batch at position p is <paramref name="batchAt"/>(p); the function must be pure.</summary>
    public static IBatchSource FromFunction(Func<long, Batch> batchAt) => new FunctionSource(batchAt ?? throw new ArgumentNullException(nameof(batchAt)));

    private sealed class FunctionSource(Func<long, Batch> batchAt) : IBatchSource
    {
        public long Position { get; set; }

        public Batch Next() => batchAt(Position++);
    }
}
