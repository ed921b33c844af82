namespace PeftGen.Text;

/// <summary>
/// Turns text into token ids and back for a language model.
/// </summary>
public interface ITokenizer
{
    /// <summary>Number of token ids; valid ids are <c>0 .. VocabSize - 1</c>.</summary>
    int VocabSize { get; }

    /// <summary>Id of the beginning-of-sequence token.</summary>
    int BosId { get; }

    /// <summary>Id of the end-of-sequence token.</summary>
    int EosId { get; }

    /// <summary>
    /// Encodes <paramref name="text"/> into token ids.
    /// </summary>
    /// <param name="text">The text to encode; may be empty.</param>
    /// <param name="addBos">Whether to put <see cref="BosId"/> first.</param>
    /// <param name="addEos">Whether to put <see cref="EosId"/> last.</param>
    /// <returns>A new array of token ids.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="text"/> is not well-formed UTF-16 (an unpaired surrogate).</exception>
    int[] Encode(string text, bool addBos = true, bool addEos = false);

    /// <summary>
    /// Decodes a whole sequence of token ids into text. The bytes of all pieces are joined first and
    /// UTF-8-decoded once, so a character split over several byte tokens comes out whole. The sequence
    /// is read as if it followed a beginning-of-sequence token: a leading <see cref="BosId"/> is skipped
    /// and the leading space of the first piece after it (the encoder's dummy prefix) is dropped.
    /// </summary>
    /// <param name="ids">The token ids.</param>
    /// <returns>The decoded text; invalid UTF-8 becomes U+FFFD.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An id is negative or not below <see cref="VocabSize"/>.</exception>
    string Decode(ReadOnlySpan<int> ids);
}
