using System.Diagnostics;
using System.Text;
using System.Text.Json;
using PeftGen.IO;
using PeftGen.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace PeftGen.Tests.IO;

public class SafetensorsTests(ITestOutputHelper output)
{
    private static Tensor Ramp(params int[] shape)
    {
        var t = Tensor.Zeros(shape);
        var s = t.AsSpan();
        for (int i = 0; i < s.Length; i++) s[i] = (i % 97) * 0.37f - 11.5f;
        return t;
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    [InlineData(DType.Float16)]
    public void Round_trip_keeps_values_names_and_metadata(DType storeAs)
    {
        using var dir = new TempFolder();
        string path = dir.File("a.safetensors");
        using var a = Ramp(3, 5);
        using var b = Ramp(7);
        using var scalar = Tensor.FromArray([2.5f]).Reshape();
        Safetensors.Save(path, [("zeta", a), ("alpha", b), ("s", scalar)], new Dictionary<string, string> { ["format"] = "pt" }, storeAs);

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["alpha", "s", "zeta"], file.TensorNames);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(0, file.DataStart % 8);
        Assert.Equal(storeAs.SafetensorsName(), file.GetInfo("zeta").DTypeName);
        Assert.Equal([3, 5], file.GetInfo("zeta").Shape);
        Assert.Empty(file.GetInfo("s").Shape);
        using var back = file.ReadTensor("zeta");
        double tolerance = storeAs == DType.Float32 ? 0 : storeAs == DType.BFloat16 ? 0.07 : 0.01;
        double err = IOTestSupport.MaxAbsDiff(a.ToArray(), back.ToArray());
        output.WriteLine($"{storeAs}: max |saved − read| = {err:E3}");
        Assert.True(err <= tolerance, $"max error {err}");
        using var s = file.ReadTensor("s");
        Assert.Equal(2.5f, s.Item());
    }

    [Fact]
    public void Header_is_sorted_json_padded_to_eight_bytes()
    {
        using var dir = new TempFolder();
        string path = dir.File("h.safetensors");
        using var a = Ramp(2, 2);
        using var b = Ramp(3);
        Safetensors.Save(path, [("b", b), ("a", a)]);
        var bytes = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(bytes, 0);
        Assert.Equal(0, (8 + n) % 8);
        var json = Encoding.UTF8.GetString(bytes, 8, (int)n);
        using var doc = JsonDocument.Parse(json.TrimEnd(' '));
        Assert.Equal(["a", "b"], doc.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal("[0,16]", doc.RootElement.GetProperty("a").GetProperty("data_offsets").GetRawText());
        Assert.Equal("[16,28]", doc.RootElement.GetProperty("b").GetProperty("data_offsets").GetRawText());
        Assert.Equal(8 + n + 28, bytes.Length);
    }

    [Fact]
    public void Conversions_between_stored_and_requested_dtypes()
    {
        using var dir = new TempFolder();
        string path = dir.File("c.safetensors");
        using var a = Ramp(4, 8);
        Safetensors.Save(path, [("w", a)], storeAs: DType.BFloat16);
        using var file = SafetensorsFile.Open(path);
        using var asHalf = file.ReadTensor("w", DType.Float16);
        using var asBf = file.ReadTensor("w", DType.BFloat16);
        Assert.Equal(DType.Float16, asHalf.DType);
        double err = IOTestSupport.MaxAbsDiff(asBf.ToArray(), asHalf.ToArray());
        output.WriteLine($"BF16 → F16 max diff {err:E3}");
        Assert.True(err < 0.02);
    }

    [Fact]
    public void Strided_views_are_saved_in_row_major_order()
    {
        using var dir = new TempFolder();
        string path = dir.File("t.safetensors");
        using var a = Ramp(3, 4);
        var t = a.Transpose(0, 1);
        Safetensors.Save(path, [("t", t)]);
        using var file = SafetensorsFile.Open(path);
        using var back = file.ReadTensor("t");
        Assert.Equal([4, 3], back.Shape.ToArray());
        Assert.Equal(t.ToArray(), back.ToArray());
    }

    [Fact]
    public void Mapped_tensor_is_zero_copy_and_outlives_the_reader()
    {
        using var dir = new TempFolder();
        string path = dir.File("m.safetensors");
        using var a = Ramp(16, 16);
        Safetensors.Save(path, [("w", a)]);
        Tensor mapped;
        using (var file = SafetensorsFile.Open(path)) mapped = file.MapTensor("w");
        using (mapped)
        {
            Assert.Equal(a.ToArray(), mapped.ToArray());
            mapped.AsSpan()[0] = 1234f; // copy-on-write: private to this process
        }
        using var again = SafetensorsFile.Open(path);
        using var fresh = again.ReadTensor("w");
        Assert.Equal(a.ToArray()[0], fresh.ToArray()[0]);
    }

    [Fact]
    public void Integer_tensors_are_listed_but_not_read_as_floats()
    {
        using var dir = new TempFolder();
        string path = dir.File("i.safetensors");
        WriteRaw(path, """{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}""", new byte[16]);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal("I64", file.GetInfo("ids").DTypeName);
        var e = Assert.Throws<SafetensorsFormatException>(() => file.ReadTensor("ids"));
        Assert.Contains("'ids'", e.Message);
        Assert.Contains("I64", e.Message);
    }

    [Fact]
    public void Failed_save_leaves_the_existing_file_byte_identical()
    {
        using var dir = new TempFolder();
        string path = dir.File("keep.safetensors");
        using var a = Ramp(4, 4);
        Safetensors.Save(path, [("w", a)]);
        var before = File.ReadAllBytes(path);

        var disposed = Ramp(2);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => Safetensors.Save(path, [("a", a), ("b", disposed)]));
        Assert.Throws<ArgumentException>(() => Safetensors.Save(path, [("a", a), ("a", a)]));
        Assert.Equal(before, File.ReadAllBytes(path));

        // A failure after the data was written (the final rename onto a directory) removes the temporary file.
        string blocked = dir.File("blocked");
        Directory.CreateDirectory(blocked);
        Assert.ThrowsAny<IOException>(() => Safetensors.Save(blocked, [("w", a)]));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["blocked", "keep.safetensors"], Directory.EnumerateFileSystemEntries(dir.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Sharded_index_reads_each_tensor_from_its_shard()
    {
        using var dir = new TempFolder();
        using var a = Ramp(2, 3);
        using var b = Ramp(5);
        Safetensors.Save(dir.File("s1.safetensors"), [("a", a)]);
        Safetensors.Save(dir.File("s2.safetensors"), [("b", b)]);
        File.WriteAllText(dir.File("index.json"), """{"metadata":{"total_size":32},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}""");
        using (var index = SafetensorsIndex.Open(dir.File("index.json")))
        {
            Assert.Equal(2, index.Shards.Count);
            using var rb = index.ReadTensor("b");
            Assert.Equal(b.ToArray(), rb.ToArray());
        }

        File.WriteAllText(dir.File("bad1.json"), """{"weight_map":{"a":"s1.safetensors","c":"s3.safetensors"}}""");
        Assert.Contains("s3.safetensors", Assert.Throws<SafetensorsFormatException>(() => SafetensorsIndex.Open(dir.File("bad1.json"))).Message);
        File.WriteAllText(dir.File("bad2.json"), """{"weight_map":{"b":"s1.safetensors"}}""");
        Assert.Contains("'b'", Assert.Throws<SafetensorsFormatException>(() => SafetensorsIndex.Open(dir.File("bad2.json"))).Message);
        File.WriteAllText(dir.File("bad3.json"), """{"weight_map":{"a":"../s1.safetensors"}}""");
        Assert.Contains("plain file name", Assert.Throws<SafetensorsFormatException>(() => SafetensorsIndex.Open(dir.File("bad3.json"))).Message);
    }

    [Fact]
    public void Open_reads_only_the_header()
    {
        using var dir = new TempFolder();
        string path = dir.File("big.safetensors");
        const long payload = 64L << 20; // 64 MB of zeros (sparse on most file systems)
        string header = $$$"""{"small":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"big":{"dtype":"F32","shape":[{{{(payload - 16) / 4}}}],"data_offsets":[16,{{{payload}}}]}}""";
        WriteRaw(path, header, []);
        using (var stream = new FileStream(path, FileMode.Open)) stream.SetLength(stream.Length + payload);
        var watch = Stopwatch.StartNew();
        using var file = SafetensorsFile.Open(path);
        using var small = file.ReadTensor("small");
        watch.Stop();
        output.WriteLine($"Open + read 16 bytes of a {payload >> 20} MB file: {watch.Elapsed.TotalMilliseconds:F2} ms");
        Assert.True(watch.ElapsedMilliseconds < 500);
    }

    /// <summary>Writes a file with the given header (space-padded to 8 bytes) and data buffer.</summary>
    internal static void WriteRaw(string path, string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        int padded = (h.Length + 7) / 8 * 8;
        var bytes = new byte[8 + padded + data.Length];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)padded);
        h.CopyTo(bytes, 8);
        bytes.AsSpan(8 + h.Length, padded - h.Length).Fill((byte)' ');
        data.CopyTo(bytes, 8 + padded);
        File.WriteAllBytes(path, bytes);
    }
}
