using System.Reflection;
using System.Text;

namespace PeftGen.Generator.Tests.TestSupport;

/// <summary>
/// Compares generated text with <c>_snapshots/&lt;name&gt;.verified.cs</c>. Set <c>PEFTGEN_ACCEPT_SNAPSHOTS=1</c> to write
/// the received text as the new snapshot (review the diff before committing it).
/// </summary>
internal static class Snapshot
{
    private const string AcceptVariable = "PEFTGEN_ACCEPT_SNAPSHOTS";

    public static void Match(string name, string received)
    {
        received = received.Replace("\r\n", "\n");
        string path = Path.Combine(ProjectDirectory, "_snapshots", name + ".verified.cs");
        if (Environment.GetEnvironmentVariable(AcceptVariable) == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, received);
            return;
        }
        if (!File.Exists(path))
            Assert.Fail($"No snapshot at {path}. Review the generated text below, then run the tests with {AcceptVariable}=1 to accept it.\n\n{received}");
        string verified = File.ReadAllText(path).Replace("\r\n", "\n");
        if (verified != received)
            Assert.Fail($"Generated text differs from {path} (- verified, + received). If the change is intended, rerun with {AcceptVariable}=1.\n\n{Diff(verified, received)}");
    }

    private static string ProjectDirectory =>
        typeof(Snapshot).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "ProjectDirectory").Value!;

    /// <summary>A line diff (longest common subsequence) showing changed lines with two lines of context.</summary>
    internal static string Diff(string expected, string actual)
    {
        var a = expected.Split('\n');
        var b = actual.Split('\n');
        var lcs = new int[a.Length + 1, b.Length + 1];
        for (int i = a.Length - 1; i >= 0; i--)
            for (int j = b.Length - 1; j >= 0; j--)
                lcs[i, j] = a[i] == b[j] ? lcs[i + 1, j + 1] + 1 : Math.Max(lcs[i + 1, j], lcs[i, j + 1]);
        var lines = new List<(char Mark, string Text)>();
        int x = 0, y = 0;
        while (x < a.Length || y < b.Length)
        {
            if (x < a.Length && y < b.Length && a[x] == b[y]) { lines.Add((' ', a[x])); x++; y++; }
            else if (y < b.Length && (x == a.Length || lcs[x, y + 1] >= lcs[x + 1, y])) lines.Add(('+', b[y++]));
            else lines.Add(('-', a[x++]));
        }
        var sb = new StringBuilder();
        for (int i = 0; i < lines.Count; i++)
        {
            bool near = Enumerable.Range(Math.Max(0, i - 2), Math.Min(lines.Count, i + 3) - Math.Max(0, i - 2)).Any(k => lines[k].Mark != ' ');
            if (near) sb.Append(lines[i].Mark).Append(' ').Append(lines[i].Text).Append('\n');
        }
        return sb.ToString();
    }
}
