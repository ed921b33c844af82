namespace PeftGen.Data;

/// <summary>
/// One training batch of next-token prediction: <paramref name="Inputs"/> and <paramref name="Targets"/> laid out
/// [BatchSize, Length] row-major; a target of -100 is not scored (prompt or padding).
/// </summary>
public sealed record Batch(int[] Inputs, int[] Targets, int BatchSize, int Length)
{
    /// <summary>Throws when the arrays do not fill the declared shape.</summary>
    public void Validate()
    {
        if (BatchSize < 1 || Length < 1 || Inputs.Length != BatchSize * Length || Targets.Length != Inputs.Length)
            throw new ArgumentException($"Batch of {Inputs.Length} inputs and {Targets.Length} targets does not fill [{BatchSize}, {Length}].");
    }
}
