using System.Text.Json;
using PeftGen.Tensors;

namespace PeftGen.IO;

/// <summary>
/// A sharded safetensors checkpoint: <c>model.safetensors.index.json</c> maps each tensor name to a shard file
/// (<c>"weight_map": {"name": "model-00001-of-00002.safetensors"}</c>). Each shard is opened once; opening checks
/// that every shard exists and holds every tensor the index assigns to it.
/// </summary>
public sealed class SafetensorsIndex : IDisposable
{
    private const int MaxJsonDepth = 8;
    private const long MaxIndexBytes = 100_000_000;

    private readonly Dictionary<string, SafetensorsFile> _shardOf;
    private readonly List<SafetensorsFile> _shards;

    private SafetensorsIndex(string path, Dictionary<string, SafetensorsFile> shardOf, List<SafetensorsFile> shards, List<string> order)
    {
        FilePath = path;
        _shardOf = shardOf;
        _shards = shards;
        TensorNames = order;
    }

    /// <summary>The index file.</summary>
    public string FilePath { get; }

    /// <summary>Tensor names in the order the index lists them.</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <summary>The open shards, in the order the index first names them.</summary>
    public IReadOnlyList<SafetensorsFile> Shards => _shards;

    /// <summary>True when the index lists a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => _shardOf.ContainsKey(name);

    /// <summary>The shard that holds tensor <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">The index does not list it; the message names the index file.</exception>
    public SafetensorsFile ShardOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _shardOf.TryGetValue(name, out var shard)
            ? shard
            : throw new KeyNotFoundException($"{FilePath}: the weight_map lists no tensor named '{name}'.");
    }

    /// <summary>The header entry of tensor <paramref name="name"/> in its shard.</summary>
    public SafetensorsTensorInfo GetInfo(string name) => ShardOf(name).GetInfo(name);

    /// <summary>Reads tensor <paramref name="name"/> from its shard (see <see cref="SafetensorsFile.ReadTensor"/>).</summary>
    public Tensor ReadTensor(string name, DType? @as = null) => ShardOf(name).ReadTensor(name, @as);

    /// <summary>Zero-copy view of tensor <paramref name="name"/> (see <see cref="SafetensorsFile.MapTensor"/>).</summary>
    public Tensor MapTensor(string name) => ShardOf(name).MapTensor(name);

    /// <summary>Opens the index at <paramref name="path"/> and every shard it names (shards live in the same folder).</summary>
    /// <exception cref="FileNotFoundException">The index does not exist.</exception>
    /// <exception cref="SafetensorsFormatException">The index is malformed, a shard is missing or malformed, or a shard lacks a tensor the index assigns to it.</exception>
    public static SafetensorsIndex Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors index not found: {path}", path);
        var map = ReadWeightMap(path);
        string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var opened = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            var shardOf = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            var order = new List<string>();
            foreach (var (tensor, shardName) in map)
            {
                if (!opened.TryGetValue(shardName, out var shard))
                {
                    string shardPath = Path.Combine(folder, shardName);
                    if (!File.Exists(shardPath))
                        throw new SafetensorsFormatException(path, $"shard '{shardName}' (holding '{tensor}') does not exist in {folder}.");
                    shard = SafetensorsFile.Open(shardPath);
                    opened.Add(shardName, shard);
                }
                if (!shard.Contains(tensor))
                    throw new SafetensorsFormatException(path, $"the weight_map puts '{tensor}' in shard '{shardName}', which has no such tensor.");
                shardOf.Add(tensor, shard);
                order.Add(tensor);
            }
            return new SafetensorsIndex(path, shardOf, opened.Values.ToList(), order);
        }
        catch
        {
            foreach (var shard in opened.Values) shard.Dispose();
            throw;
        }
    }

    /// <summary>Closes every shard (zero-copy tensors keep their own mapping alive).</summary>
    public void Dispose()
    {
        foreach (var shard in _shards) shard.Dispose();
    }

    private static List<(string Tensor, string Shard)> ReadWeightMap(string path)
    {
        long length = new FileInfo(path).Length;
        if (length > MaxIndexBytes)
            throw new SafetensorsFormatException(path, $"{length:N0} bytes is too large for an index (limit {MaxIndexBytes:N0}).");
        var bytes = File.ReadAllBytes(path);
        if (!System.Text.Unicode.Utf8.IsValid(bytes))
            throw new SafetensorsFormatException(path, "the index is not valid UTF-8.");
        try
        {
            using var document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = MaxJsonDepth });
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(path, $"the index must be a JSON object, found {document.RootElement.ValueKind}.");
            if (!document.RootElement.TryGetProperty("weight_map", out var weightMap) || weightMap.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(path, "the index has no \"weight_map\" object.");
            var result = new List<(string, string)>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in weightMap.EnumerateObject())
            {
                if (!seen.Add(entry.Name))
                    throw new SafetensorsFormatException(path, $"weight_map lists '{entry.Name}' twice.");
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw new SafetensorsFormatException(path, $"weight_map['{entry.Name}'] must be a shard file name, found {entry.Value.ValueKind}.");
                string shard = entry.Value.GetString()!;
                // Shards are plain file names beside the index; anything else could reach outside the checkpoint folder.
                if (shard.Length == 0 || shard != Path.GetFileName(shard) || shard is "." or "..")
                    throw new SafetensorsFormatException(path, $"weight_map['{entry.Name}'] = '{shard}' is not a plain file name in the index's folder.");
                result.Add((entry.Name, shard));
            }
            return result;
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, $"the index is not valid JSON ({e.Message}).", e);
        }
    }
}
