using System.Runtime.InteropServices;
using PeftGen.IO;
using PeftGen.Tensors;
using Xunit;

namespace PeftGen.Tests.IO;

/// <summary>The streaming safetensors writer: the bytes of <see cref="Safetensors.Save(string, IEnumerable{SafetensorsEntry}, IReadOnlyDictionary{string, string}?)"/>, checked writes, and nothing left behind unless committed.</summary>
public class SafetensorsWriterTests
{
    private static readonly Dictionary<string, string> Metadata = new() { ["format"] = "pt" };

    private static Tensor Ramp(params int[] shape)
    {
        var t = Tensor.Zeros(shape);
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = (i % 97) * 0.37f - 11.5f;
        return t;
    }

    private static string[] Entries(TempFolder dir) => [.. Directory.EnumerateFileSystemEntries(dir.Path).Select(p => Path.GetFileName(p)!).Order()];

    [Fact]
    public void Streamed_file_has_the_bytes_Save_writes()
    {
        using var dir = new TempFolder();
        using var w = Ramp(3, 5);
        using var v = Ramp(7);
        using var strided = Ramp(4, 6).Transpose(0, 1);
        long[] ids = [3, 1, 4, 1, 5];
        Safetensors.Save(dir.File("saved.safetensors"),
            [SafetensorsEntry.FromTensor("w", w, DType.BFloat16), SafetensorsEntry.FromTensor("v", v), SafetensorsEntry.FromTensor("t", strided, DType.Float16), SafetensorsEntry.FromInt64("ids", ids)],
            Metadata);

        using (var writer = SafetensorsWriter.Create(dir.File("streamed.safetensors"),
            [SafetensorsTensorSpec.Of("w", DType.BFloat16, [3, 5]), SafetensorsTensorSpec.Of("v", DType.Float32, [7]),
             SafetensorsTensorSpec.Of("t", DType.Float16, [6, 4]), new SafetensorsTensorSpec("ids", "I64", [5])], Metadata))
        {
            Assert.Equal(["ids", "t", "v", "w"], writer.Tensors.Select(t => t.Name));
            writer.Write("ids", MemoryMarshal.AsBytes(ids.AsSpan()));
            writer.Write("t", strided);
            writer.Write("v", v);
            writer.Write("w", w);
            Assert.Null(writer.Next);
            writer.Commit();
        }
        Assert.Equal(File.ReadAllBytes(dir.File("saved.safetensors")), File.ReadAllBytes(dir.File("streamed.safetensors")));
        Assert.Equal(["saved.safetensors", "streamed.safetensors"], Entries(dir));
    }

    [Fact]
    public void Writes_out_of_order_or_of_the_wrong_size_fail_and_leave_the_target_unchanged()
    {
        using var dir = new TempFolder();
        string path = dir.File("keep.safetensors");
        using var a = Ramp(2, 3);
        Safetensors.Save(path, [("a", a), ("b", a)]);
        var before = File.ReadAllBytes(path);
        SafetensorsTensorSpec[] specs = [SafetensorsTensorSpec.Of("a", DType.Float32, [2, 3]), SafetensorsTensorSpec.Of("b", DType.Float32, [2, 3])];

        var attempts = new Action<SafetensorsWriter>[]
        {
            writer => writer.Write("b", a),                                                           // b is announced after a
            writer => writer.Write("a", new byte[23]),                                                 // 24 bytes were announced
            writer => writer.Write("a", Ramp(3, 2)),                                                   // same count, other shape
            writer => { writer.Write("a", a); writer.Commit(); },                                      // b never written
            writer => { writer.Write("a", a); throw new IOException("the input was cut short"); }, // a failure between tensors
        };
        foreach (var attempt in attempts)
        {
            var writer = SafetensorsWriter.Create(path, specs);
            try
            {
                var e = Assert.ThrowsAny<Exception>(() => attempt(writer));
                Assert.True(e is InvalidOperationException or IOException, e.ToString());
                Assert.Contains(e is IOException ? "cut short" : path, e.Message);
                if (e is InvalidOperationException)
                    Assert.Throws<InvalidOperationException>(() => writer.Commit()); // a failed writer cannot be committed
            }
            finally
            {
                writer.Dispose();
            }
            Assert.Equal(before, File.ReadAllBytes(path));
            Assert.Equal(["keep.safetensors"], Entries(dir));
        }
    }

    [Fact]
    public void Bad_specs_are_refused_before_a_file_exists()
    {
        using var dir = new TempFolder();
        string path = dir.File("x.safetensors");
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Create(path, [new SafetensorsTensorSpec("a", "F32", [1]), new SafetensorsTensorSpec("a", "F32", [1])]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Create(path, [new SafetensorsTensorSpec("__metadata__", "F32", [1])]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Create(path, [new SafetensorsTensorSpec("a", "F33", [1])]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Create(path, [new SafetensorsTensorSpec("a", "F32", [2, -1])]));
        Assert.Empty(Entries(dir));
    }
}
