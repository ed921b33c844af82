namespace PeftGen.Tensors;

/// <summary>The kind of memory and processor a tensor lives on.</summary>
public enum DeviceType
{
    /// <summary>Host memory, computed by the managed SIMD kernels.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU through the CUDA backend (the PeftGen.Cuda package, registered with <c>CudaSupport.Register()</c>).</summary>
    Cuda,
}

/// <summary>Where a tensor lives: a device type and, for GPUs, an ordinal.</summary>
/// <param name="Type">The device type.</param>
/// <param name="Index">The device ordinal (0 for the CPU).</param>
public readonly record struct Device(DeviceType Type, int Index = 0)
{
    /// <summary>The host CPU.</summary>
    public static Device Cpu { get; } = new(DeviceType.Cpu);

    /// <summary>Parses "cpu", "cuda" or "cuda:N" (the PyTorch spelling).</summary>
    public static Device Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim().ToLowerInvariant();
        if (t == "cpu") return Cpu;
        if (t == "cuda") return new Device(DeviceType.Cuda);
        if (t.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(t.AsSpan(5), out int index) && index >= 0)
            return new Device(DeviceType.Cuda, index);
        throw new FormatException($"Unknown device '{text}': use 'cpu', 'cuda' or 'cuda:N'.");
    }

    /// <inheritdoc />
    public override string ToString() => Type == DeviceType.Cpu ? "cpu" : $"cuda:{Index}";
}
