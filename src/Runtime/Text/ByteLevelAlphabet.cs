namespace PeftGen.Text;

/// <summary>
/// GPT-2's reversible map from the 256 byte values to printable characters (<c>bytes_to_unicode</c>): bytes that
/// are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, and the other 68 bytes
/// take U+0100, U+0101, ... in byte order. Byte-level BPE vocabularies are written in these characters, so a space
/// appears as 'Ġ' (U+0120) and a newline as 'Ċ' (U+010A).
/// </summary>
internal static class ByteLevelAlphabet
{
    /// <summary>The character that stands for each byte.</summary>
    public static readonly char[] CharOfByte = BuildCharOfByte();

    /// <summary>The byte each map character stands for, or -1; indexed by character up to U+0143.</summary>
    private static readonly short[] ByteOfChar = BuildByteOfChar();

    /// <summary>The map character string of the UTF-8 bytes of <paramref name="text"/>.</summary>
    public static string Map(ReadOnlySpan<char> text)
    {
        int byteCount = System.Text.Encoding.UTF8.GetByteCount(text);
        Span<byte> bytes = byteCount <= 512 ? stackalloc byte[byteCount] : new byte[byteCount];
        System.Text.Encoding.UTF8.GetBytes(text, bytes);
        Span<char> chars = byteCount <= 512 ? stackalloc char[byteCount] : new char[byteCount];
        for (int i = 0; i < byteCount; i++)
        {
            chars[i] = CharOfByte[bytes[i]];
        }
        return new string(chars);
    }

    /// <summary>The byte a map character stands for; false for characters outside the map.</summary>
    public static bool TryGetByte(char c, out byte value)
    {
        if (c < ByteOfChar.Length && ByteOfChar[c] >= 0)
        {
            value = (byte)ByteOfChar[c];
            return true;
        }
        value = 0;
        return false;
    }

    private static char[] BuildCharOfByte()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    private static short[] BuildByteOfChar()
    {
        var inverse = new short[256 + 68];
        Array.Fill(inverse, (short)-1);
        for (int b = 0; b < 256; b++)
        {
            inverse[CharOfByte[b]] = (short)b;
        }
        return inverse;
    }
}
