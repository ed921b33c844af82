using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>One parameter's optimizer state, however it is stored.</summary>
internal abstract unsafe class OptimizerMoments : IDisposable
{
    /// <summary>Bytes of state held.</summary>
    public abstract long Bytes { get; }

    /// <summary>Writes the raw state bytes.</summary>
    public abstract void Write(Stream stream);

    /// <summary>Overwrites the state with bytes written by <see cref="Write"/>.</summary>
    public abstract void Read(Stream stream);

    public abstract void Dispose();

    protected static void WriteBytes(Stream stream, byte* data, long length)
    {
        // Spans are int-sized; a tensor's state may not be.
        for (long offset = 0; offset < length; offset += int.MaxValue)
            stream.Write(new ReadOnlySpan<byte>(data + offset, (int)Math.Min(int.MaxValue, length - offset)));
    }

    protected static void ReadBytes(Stream stream, byte* data, long length)
    {
        for (long offset = 0; offset < length; offset += int.MaxValue)
            stream.ReadExactly(new Span<byte>(data + offset, (int)Math.Min(int.MaxValue, length - offset)));
    }
}

/// <summary>Float32 m and v shaped like the parameter (AdamW, and AdamW8bit's small tensors).</summary>
internal sealed unsafe class FullMoments(Tensor p, bool paged) : OptimizerMoments
{
    public Tensor M { get; } = NewMoment(p, paged); // shaped like p, float32
    public Tensor V { get; } = NewMoment(p, paged); // shaped like p, float32

    public override long Bytes => 2 * M.Count * sizeof(float);

    public override void Write(Stream stream)
    {
        foreach (var moment in (Tensor[])[M, V])
        {
            // GPU moments go through a host copy (the file format is the same).
            using var host = moment.Device.Type == DeviceType.Cpu ? null : moment.To(Device.Cpu);
            WriteBytes(stream, (byte*)(host ?? moment).Data, moment.Count * sizeof(float));
        }
    }

    public override void Read(Stream stream)
    {
        foreach (var moment in (Tensor[])[M, V])
        {
            using var host = moment.Device.Type == DeviceType.Cpu ? null : Tensor.Create(moment.ShapeArray, DType.Float32, zeroed: false, scoped: false);
            ReadBytes(stream, (byte*)(host ?? moment).Data, moment.Count * sizeof(float));
            if (host != null) moment.CopyFrom(host);
        }
    }

    public override void Dispose()
    {
        M.Dispose();
        V.Dispose();
    }

    private static Tensor NewMoment(Tensor p, bool paged) =>
        p.Device.Type != DeviceType.Cpu
            ? paged ? Backends.DeviceBackends.Provider(p.Device).PagedZeros(p.Device, p.ShapeArray)
                : Tensor.Create(p.ShapeArray, DType.Float32, zeroed: true, scoped: false, device: p.Device)
            : paged ? PagedMemory.Zeros(p.ShapeArray) : Tensor.Create(p.ShapeArray, DType.Float32, zeroed: true, scoped: false);
}
