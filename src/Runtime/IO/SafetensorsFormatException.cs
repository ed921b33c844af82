namespace PeftGen.IO;

/// <summary>
/// A safetensors file (or its index) breaks the format: the message names the file, the tensor or header field,
/// and what is wrong with it. It derives from <see cref="IOException"/> because <see cref="InvalidDataException"/> is
/// sealed; the model and adapter loaders throw <see cref="InvalidDataException"/> for their own checks.
/// </summary>
public sealed class SafetensorsFormatException : IOException
{
    /// <summary>Creates the exception for <paramref name="path"/> with a description of the problem.</summary>
    public SafetensorsFormatException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner)
    {
        FilePath = path;
    }

    /// <summary>The offending file.</summary>
    public string FilePath { get; }
}
