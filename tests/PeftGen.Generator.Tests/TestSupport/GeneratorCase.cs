namespace PeftGen.Generator.Tests.TestSupport;

/// <summary>
/// A consumer program: sources and additional files (config.json), and the hint name of the file the generator adds for
/// it where a snapshot pins that file.
/// </summary>
internal sealed record GeneratorCase(string[] Sources, (string Path, string Text)[] AdditionalFiles)
{
    public GeneratorCase(params string[] sources) : this(sources, []) { }

    /// <summary>The generated file's name (<c>Namespace.Type.g.cs</c>), for the snapshot test.</summary>
    public string? HintName { get; init; }
}
