using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Microsoft.CodeAnalysis.CSharp;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Emitting;

/// <summary>C# text for values: literals in invariant culture, runtime names as <c>global::</c> names.</summary>
internal static class Code
{
    public const string Generic = "global::System.Collections.Generic.";

    public const string Tensor = "global::PeftGen.Tensors.Tensor";

    public const string InvalidData = "global::System.IO.InvalidDataException";

    public static string Targets(TargetSpec targets) => targets.Kind switch
    {
        TargetKind.AllLinear => "global::PeftGen.Methods.TargetModules.AllLinear",
        TargetKind.List => "global::PeftGen.Methods.TargetModules.List(" + string.Join(", ", targets.Names.Select(Quote)) + ")",
        TargetKind.Regex => "global::PeftGen.Methods.TargetModules.Regex(" + Verbatim(targets.Text) + ")",
        _ => "global::PeftGen.Methods.TargetModules.Parse(" + Quote(targets.Text) + ")",
    };

    public static string Enum(EnumValueSpec value) =>
        value.MemberName != null
            ? value.TypeName + "." + value.MemberName
            : "(" + value.TypeName + ")" + value.Value.ToString(CultureInfo.InvariantCulture);

    /// <summary>Text for an XML documentation comment.</summary>
    public static string Xml(string text) => text.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");

    public static string Quote(string text) => SymbolDisplay.FormatLiteral(text, quote: true);

    // Regexes read as written when their backslashes are not doubled.
    private static string Verbatim(string text) =>
        text.IndexOf('\\') >= 0 && text.IndexOfAny(new[] { '"', '\n', '\r' }) < 0 ? "@\"" + text + "\"" : Quote(text);

    public static string Int(int value) => value.ToString(CultureInfo.InvariantCulture);

    public static string Long(long value) => value.ToString(CultureInfo.InvariantCulture) + "L";

    public static string Bool(bool value) => value ? "true" : "false";

    public static string Float(float value) =>
        float.IsNaN(value) ? "float.NaN"
        : float.IsPositiveInfinity(value) ? "float.PositiveInfinity"
        : float.IsNegativeInfinity(value) ? "float.NegativeInfinity"
        : value.ToString("R", CultureInfo.InvariantCulture) + "f";

    /// <summary><c>new string[] { "a", "b" }</c>.</summary>
    public static string Strings(IEnumerable<string> items) => "new string[] { " + string.Join(", ", items.Select(Quote)) + " }";

    /// <summary><c>new int[] { 0, 1 }</c>.</summary>
    public static string Ints(IEnumerable<int> items) => "new int[] { " + string.Join(", ", items.Select(Int)) + " }";
}
