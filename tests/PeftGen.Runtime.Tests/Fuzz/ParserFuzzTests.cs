using FsCheck;
using FsCheck.Fluent;
using Microsoft.FSharp.Core;
using PeftGen.Fuzz;
using PeftGen.Tests.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.Fuzz;

/// <summary>
/// Property tests over the parsers that take user files: FsCheck-generated mutations (byte flips, insertions,
/// deletions, truncation, extreme numbers, duplicated keys) of valid seed files never end in an undocumented exception,
/// a hang (over <see cref="ParserFuzz.Timeout"/>) or allocation beyond <see cref="ParserFuzz.AllocationBound"/>.
/// Deterministic (fixed FsCheck replay seed); the harness is shared with <c>benchmarks -- robustness</c>.
/// </summary>
[Trait("Category", "Fuzz")]
public sealed class ParserFuzzTests(ITestOutputHelper output) : IDisposable
{
    private const ulong Seed = 20261207;

    private readonly string _work = Path.Combine(Path.GetTempPath(), $"peftgen-fuzz-{Guid.NewGuid():N}");

    /// <summary>One mutation: FsCheck picks the kind (text-aware ones more often for text files), the file, the position and the value.</summary>
    private static readonly Gen<Mutation> MutationGen =
        from kind in Gen.Frequency(
            (3, Gen.Constant(MutationKind.SetByte)), (3, Gen.Constant(MutationKind.FlipBit)), (2, Gen.Constant(MutationKind.Insert)),
            (2, Gen.Constant(MutationKind.Delete)), (1, Gen.Constant(MutationKind.Truncate)),
            (3, Gen.Constant(MutationKind.ReplaceNumber)), (2, Gen.Constant(MutationKind.DuplicateKey)))
        from file in Gen.Choose(0, 3)
        from position in Gen.Choose(0, int.MaxValue)
        from value in Gen.Choose(0, int.MaxValue)
        select new Mutation(kind, file, position, value);

    /// <summary>1–4 mutations applied in order.</summary>
    private static readonly Gen<Mutation[]> MutationsGen =
        from count in Gen.Choose(1, 4)
        from list in Gen.ArrayOf(MutationGen, count)
        select list;

    /// <summary>Shrinks by dropping one mutation, so a failure is reported with the fewest mutations that still fail.</summary>
    private static IEnumerable<Mutation[]> Shrink(Mutation[] mutations) =>
        mutations.Length <= 1 ? [] : Enumerable.Range(0, mutations.Length).Select(i => mutations.Where((_, j) => j != i).ToArray());

    private void Fuzz(string parser, int inputs)
    {
        var target = ParserFuzz.Target(parser, Path.Combine(_work, "seeds"), SharedModels.Stories260KDir)
            ?? throw new InvalidOperationException($"{parser}: seed files absent");
        var stats = new FuzzStats(parser);
        var failures = new List<string>();
        var property = Prop.ForAll(Arb.From(MutationsGen, Shrink), (Mutation[] mutations) =>
        {
            var outcome = ParserFuzz.RunOne(target, mutations, _work);
            string description = outcome.Ok ? "" : ParserFuzz.Describe(target, mutations, outcome);
            stats.Add(outcome, description);
            if (!outcome.Ok)
            {
                failures.Add(description);
                return false;
            }
            return true;
        });
        var config = Config.QuickThrowOnFailure.WithMaxTest(inputs)
            .WithReplay(FSharpOption<Replay>.Some(new Replay(new Rnd(Seed), FSharpOption<int>.None)));
        try
        {
            Check.One(config, property);
        }
        finally
        {
            output.WriteLine(stats.Summary.Replace(", 0 hung, 0 over the allocation bound", ""));
            foreach (var failure in failures.Take(5)) output.WriteLine(failure);
        }
        Assert.Equal(0, stats.Failed);
        Assert.True(stats.Accepted + stats.Rejected == stats.Tried);
    }

    [Fact] public void Safetensors_open_and_read_every_tensor() => Fuzz("safetensors", 500);

    [Fact] public void LlamaConfig_load() => Fuzz("config.json", 500);

    [Fact] public void Adapter_config_read() => Fuzz("adapter_config.json", 500);

    [Fact] public void Adapter_folder_load_into_a_tiny_model() => Fuzz("adapter_folder", 300);

    [Fact] public void HuggingFace_tokenizer_json_load() => Fuzz("tokenizer.json", 300);

    [Fact] public void Llama2_tokenizer_bin_load() => Fuzz("tokenizer.bin", 500);

    [Fact] public void Llama2c_checkpoint_load() => Fuzz("llama2c", 300);

    [Fact] public void Jsonl_dataset_load() => Fuzz("jsonl", 500);

    [Fact] public void Trainer_checkpoint_load() => Fuzz("trainer_checkpoint", 300);

    [StoriesFact] public void Stories260K_tok512_load() => Fuzz("tok512.bin", 200);

    [StoriesFact] public void Stories260K_checkpoint_load() => Fuzz("stories260K.bin", 200);

    [Fact]
    public void The_harness_reports_crashes_hangs_and_over_allocation()
    {
        SeedFile[] seed = [new("x.bin", [1, 2, 3], false)];
        Mutation[] none = [new(MutationKind.SetByte, 0, 0, 1)];
        FuzzResult Run(Action<string> parse, TimeSpan? timeout = null) =>
            ParserFuzz.RunOne(new ParserTarget("probe", seed, parse), none, _work, timeout).Result;

        Assert.Equal(FuzzResult.Accepted, Run(_ => { }));
        Assert.Equal(FuzzResult.Rejected, Run(_ => throw new InvalidDataException("bad")));
        Assert.Equal(FuzzResult.Crashed, Run(_ => throw new IndexOutOfRangeException()));
        Assert.Equal(FuzzResult.Crashed, Run(_ => throw new IOException("not a documented rejection")));
        Assert.Equal(FuzzResult.OverAllocation, Run(_ => GC.KeepAlive(new byte[32 << 20])));
        using var release = new ManualResetEventSlim();
        Assert.Equal(FuzzResult.Hang, Run(_ => release.Wait(TimeSpan.FromSeconds(10)), TimeSpan.FromMilliseconds(100)));
        release.Set();
    }

    [Fact]
    public void Invalid_utf8_inside_a_tokenizer_json_string_is_invalid_data()
    {
        Directory.CreateDirectory(_work);
        string path = Path.Combine(_work, "tokenizer.json");
        var bytes = System.Text.Encoding.UTF8.GetBytes(ParserFuzz.ByteLevelTokenizerJson());
        int at = Array.IndexOf(bytes, (byte)'B'); // inside "BPE"
        bytes[at] = 0xFF;
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<InvalidDataException>(() => PeftGen.Text.HuggingFaceTokenizer.Load(path));
        Assert.Contains(path, e.Message);
    }

    [Theory]
    [InlineData("\"id\":263,", "\"id\":\"263\",", "$.added_tokens[0].id")]      // a string id (was InvalidOperationException)
    [InlineData("\"id\":263,", "\"id\":2147483647,", "$.added_tokens[0].id")]   // int.MaxValue (was IndexOutOfRange)
    [InlineData("\"id\":263,", "\"id\":750000000,", "$.added_tokens[0].id")]    // a 6 GB id table
    public void A_corrupt_added_token_id_is_invalid_data(string from, string to, string field)
    {
        Directory.CreateDirectory(_work);
        string path = Path.Combine(_work, "tokenizer.json");
        string json = ParserFuzz.ByteLevelTokenizerJson();
        int firstAdded = json.IndexOf("\"added_tokens\"", StringComparison.Ordinal);
        string id = json[firstAdded..].Contains(from, StringComparison.Ordinal) ? from : throw new InvalidOperationException($"seed has no {from}");
        int at = json.IndexOf(id, firstAdded, StringComparison.Ordinal);
        File.WriteAllText(path, json[..at] + to + json[(at + from.Length)..]);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<InvalidDataException>(() => PeftGen.Text.HuggingFaceTokenizer.Load(path));
        Assert.Contains(field, e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 64L << 20);
    }

    public void Dispose()
    {
        try
        {
            if (Directory.Exists(_work)) Directory.Delete(_work, recursive: true);
        }
        catch (IOException)
        {
            // A hung parse may still hold a file.
        }
    }
}
