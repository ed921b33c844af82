namespace PeftGen.Benchmarks;

/// <summary>Tiny "--name value" parser shared by the benchmarks (defaults fill what is not given).</summary>
internal static class BenchmarkArgs
{
    public static Dictionary<string, string> Parse(string[] args, Dictionary<string, string> defaults)
    {
        var result = new Dictionary<string, string>(defaults);
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
                throw new ArgumentException($"expected '--name value' pairs, got '{args[i]}'");
            string name = args[i][2..];
            if (!defaults.ContainsKey(name)) throw new ArgumentException($"unknown option --{name} (known: {string.Join(", ", defaults.Keys.Select(k => "--" + k))})");
            result[name] = args[++i];
        }
        return result;
    }

    public static int Fail(string message)
    {
        Console.Error.WriteLine($"error: {message}");
        return 2;
    }
}
