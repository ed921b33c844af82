using System.Text;

namespace PeftGen.Generator.Emitting;

/// <summary>Builds source text line by line with four-space indentation and "\n" line endings on every platform.</summary>
internal sealed class IndentedWriter
{
    /// <summary>
    /// The attribute on every generated member, as the MVVM Toolkit's generators write it: the members join a class the
    /// user wrote, so the attribute marks them, not the class (code coverage and analyzers then skip only them).
    /// </summary>
    private static readonly string GeneratedCode =
        "[global::System.CodeDom.Compiler.GeneratedCode(\"PeftGen.Generator\", \"" + typeof(IndentedWriter).Assembly.GetName().Version + "\")]";

    private readonly StringBuilder _text = new();
    private int _depth;

    public IndentedWriter Line(string line = "")
    {
        if (line.Length > 0) _text.Append(' ', _depth * 4).Append(line);
        _text.Append('\n');
        return this;
    }

    /// <summary>Writes the first line of a member's declaration, marked as generated code.</summary>
    public IndentedWriter Member(string declaration) => Line(GeneratedCode).Line(declaration);

    /// <summary>Writes "{" and indents what follows.</summary>
    public IndentedWriter Open()
    {
        Line("{");
        _depth++;
        return this;
    }

    /// <summary>Unindents and writes "}" followed by <paramref name="suffix"/> (";" after an initializer).</summary>
    public IndentedWriter Close(string suffix = "")
    {
        _depth--;
        return Line("}" + suffix);
    }

    public override string ToString() => _text.ToString();
}
