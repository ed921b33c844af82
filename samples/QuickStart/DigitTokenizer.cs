using System.Text;
using PeftGen.Text;

namespace PeftGen.Samples.QuickStart;

/// <summary>
/// The QuickStart's tokenizer: the ten digits are tokens 0–9, then BOS (10) and EOS (11), twelve tokens as
/// vocab_size says in digits-config.json. Whitespace between digits is ignored when encoding and written back as
/// single spaces when decoding, so "5 4 3" and "543" are the same three tokens.
/// </summary>
internal sealed class DigitTokenizer : ITokenizer
{
    public int VocabSize => 12;

    public int BosId => 10;

    public int EosId => 11;

    public int[] Encode(string text, bool addBos = true, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length + 2);
        if (addBos) ids.Add(BosId);
        foreach (char c in text)
        {
            if (c is >= '0' and <= '9') ids.Add(c - '0');
            else if (!char.IsWhiteSpace(c))
                throw new ArgumentException($"The digit tokenizer has no token for '{c}': the QuickStart's data holds digits separated by spaces.", nameof(text));
        }
        if (addEos) ids.Add(EosId);
        return ids.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        if (ids.Length > 0 && ids[0] == BosId) ids = ids[1..];
        var text = new StringBuilder();
        foreach (int id in ids)
        {
            if (text.Length > 0) text.Append(' ');
            text.Append(id switch
            {
                >= 0 and <= 9 => ((char)('0' + id)).ToString(),
                10 => "<s>",
                11 => "</s>",
                _ => throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id {id} is not below the vocabulary size {VocabSize}."),
            });
        }
        return text.ToString();
    }
}
