using System.Runtime.InteropServices;
using System.Text;
using PeftGen.Autograd;

namespace PeftGen.Tensors;

/// <summary>
/// An n-dimensional array with a shape, strides, an element type and a device, optionally tracked by autograd.
/// Views (reshape, transpose, slice) share storage. A tensor created inside a <see cref="TensorScope"/> is
/// released with the scope; otherwise its creator disposes it. Parameters are never scope-owned.
/// </summary>
public sealed unsafe class Tensor : IDisposable
{
    private readonly int[] _shape;
    private readonly long[] _strides;
    private TensorStorage? _storage;

    internal Tensor(TensorStorage storage, int[] shape, long[] strides, long offset, DType dtype, bool scoped)
    {
        _storage = storage;
        _shape = shape;
        _strides = strides;
        Offset = offset;
        DType = dtype;
        Count = ShapeUtil.Count(shape);
        if (scoped) TensorScope.Register(this);
    }

    // ---- description ----------------------------------------------------------------------------------

    /// <summary>Sizes of the dimensions, outermost first.</summary>
    public ReadOnlySpan<int> Shape => _shape;

    /// <summary>Element strides of the dimensions.</summary>
    public ReadOnlySpan<long> Strides => _strides;

    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;

    /// <summary>Number of elements.</summary>
    public long Count { get; }

    /// <summary>Element type.</summary>
    public DType DType { get; private set; }

    /// <summary>Where the data lives.</summary>
    public Device Device => Storage.Device;

    /// <summary>Optional name, used in error messages and state dicts.</summary>
    public string? Name { get; set; }

    /// <summary>True when elements are laid out densely in row-major order.</summary>
    public bool IsContiguous => ShapeUtil.IsContiguous(_shape, _strides);

    /// <summary>True once <see cref="Dispose"/> released this tensor's hold on its storage.</summary>
    public bool IsDisposed => _storage == null;

    /// <summary>True for a parameter built under <see cref="EmptyWeights.Scope"/> that no loader has filled yet: it has a shape but no memory.</summary>
    public bool IsEmpty => _storage is EmptyStorage;

    /// <summary>Size of dimension <paramref name="dim"/>; negative counts from the end.</summary>
    public int Size(int dim) => _shape[ShapeUtil.NormalizeDim(dim, Rank)];

    internal TensorStorage Storage => _storage ?? throw new ObjectDisposedException(DescribeForError());
    internal long Offset { get; }
    internal int[] ShapeArray => _shape;
    internal long[] StridesArray => _strides;

    // ---- autograd ---------------------------------------------------------------------------------------

    /// <summary>
    /// Whether gradients flow to this tensor. Set it on leaves (parameters); op outputs get it from their inputs.
    /// Frozen tensors (false) get no gradient buffer.
    /// </summary>
    public bool RequiresGrad
    {
        get => _requiresGrad;
        set
        {
            if (value && DType != DType.Float32)
                throw new InvalidOperationException($"Only float32 tensors can require gradients; {DescribeForError()} is {DType}.");
            _requiresGrad = value;
        }
    }
    private bool _requiresGrad;

    /// <summary>The accumulated gradient, or null before a backward pass reached this tensor.</summary>
    public Tensor? Grad { get; internal set; }

    /// <summary>True for tensors not produced by a recorded op (parameters, inputs).</summary>
    public bool IsLeaf => !IsRecorded;
    internal bool IsRecorded { get; set; }

    /// <summary>Back-propagates from this scalar through the ops recorded since the last backward pass.</summary>
    public void Backward() => Tape.Current.Backward(this);

    /// <summary>Releases this tensor's gradient buffer (an optimizer's zero_grad with set_to_none).</summary>
    public void ZeroGrad()
    {
        Grad?.Dispose();
        Grad = null;
    }

    // ---- data access ------------------------------------------------------------------------------------

    /// <summary>Pointer to the first element of a CPU float32 tensor (honouring the view's offset).</summary>
    internal float* Data
    {
        get
        {
            RequireCpu(DType.Float32);
            return (float*)HostPointer + Offset;
        }
    }

    /// <summary>Pointer to the first element of a CPU tensor, any dtype.</summary>
    internal byte* RawData => HostPointer + Offset * DType.ElementSize();

    private byte* HostPointer => Storage switch
    {
        HostStorage host => host.Pointer,
        EmptyStorage => throw new InvalidOperationException(
            $"{DescribeForError()} was created without memory (EmptyWeights) and never loaded: it is missing from the checkpoint the model was loaded from."),
        _ => throw new InvalidOperationException($"{DescribeForError()} is on {Device}; this operation needs a CPU tensor: copy it with To(Device.Cpu)."),
    };

    /// <summary>The raw bytes of a contiguous CPU tensor of any dtype.</summary>
    internal Span<byte> RawDataSpan()
    {
        if (!IsContiguous) throw new InvalidOperationException($"{DescribeForError()} is a strided view.");
        return new Span<byte>(RawData, checked((int)(Count * DType.ElementSize())));
    }

    /// <summary>The elements of a contiguous CPU float32 tensor, writable in place.</summary>
    public Span<float> AsSpan()
    {
        RequireCpu(DType.Float32);
        if (!IsContiguous) throw new InvalidOperationException($"{DescribeForError()} is a strided view; call Contiguous() first.");
        return new Span<float>(Data, checked((int)Count));
    }

    /// <summary>Copies the elements, in row-major order, to a new float32 array (any layout, any dtype).</summary>
    public float[] ToArray()
    {
        if (Device.Type != DeviceType.Cpu)
        {
            using var host = ToDevice(Device.Cpu, scoped: false);
            return host.ToArray();
        }
        var result = new float[Count];
        Tensor? dense = null;
        if (DType != DType.Float32) dense = ConvertDType(DType.Float32, scoped: false);
        else if (!IsContiguous)
        {
            dense = Create(_shape, DType.Float32, zeroed: false, scoped: false);
            Backends.Backend.Of(this).CopyStrided(this, dense, accumulate: false);
        }
        try
        {
            new ReadOnlySpan<float>((dense ?? this).Data, checked((int)Count)).CopyTo(result);
        }
        finally
        {
            dense?.Dispose();
        }
        return result;
    }

    /// <summary>
    /// Copies the elements of <paramref name="source"/> (same shape) into this tensor and returns it. Between float32 tensors
    /// either may be a strided view; when either is 16-bit the values are converted (rounding to nearest even when
    /// narrowing) and this tensor must be dense.
    /// </summary>
    /// <exception cref="ArgumentException">The shapes differ.</exception>
    /// <exception cref="InvalidOperationException">A 16-bit copy targets a strided view.</exception>
    public Tensor CopyFrom(Tensor source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!source.Shape.SequenceEqual(Shape))
            throw new ArgumentException($"CopyFrom: {source.DescribeForError()} does not match {DescribeForError()}.", nameof(source));
        if (source.DType == DType.Float32 && DType == DType.Float32)
        {
            Backends.Backend.Of(this).CopyStrided(source, this, accumulate: false);
            return this;
        }
        if (!IsContiguous)
            throw new InvalidOperationException($"CopyFrom: {DescribeForError()} is a strided {DType} view; copies involving 16-bit tensors need a dense destination.");
        using var onDevice = source.Device == Device ? null : source.ToDevice(Device, scoped: false);
        var src = onDevice ?? source;
        if (src.IsContiguous)
            Backends.Backend.Of(this).ConvertDType(src, this);
        else
        {
            using var dense = src.ConvertDType(DType, scoped: false);
            Backends.Backend.Of(this).ConvertDType(dense, this);
        }
        return this;
    }

    /// <summary>The value of a one-element tensor.</summary>
    public float Item()
    {
        if (Count != 1) throw new InvalidOperationException($"Item() needs a one-element tensor; {DescribeForError()} has {Count}.");
        if (DType == DType.Float32 && Device.Type == DeviceType.Cpu) return *(float*)RawData;
        return ToArray()[0];
    }

    // ---- factories -------------------------------------------------------------------------------------

    /// <summary>A new tensor filled with zeros.</summary>
    public static Tensor Zeros(params int[] shape) => Create(shape, DType.Float32, zeroed: true);

    /// <summary>A new tensor of <paramref name="dtype"/> filled with zeros.</summary>
    public static Tensor Zeros(int[] shape, DType dtype) => Create(shape, dtype, zeroed: true);

    /// <summary>A new float32 tensor whose elements are all <paramref name="value"/>.</summary>
    public static Tensor Full(int[] shape, float value)
    {
        var t = Create(shape, DType.Float32, zeroed: false);
        if (!t.IsEmpty) t.AsSpan().Fill(value);
        return t;
    }

    /// <summary>A new float32 tensor holding a copy of <paramref name="data"/> in the given shape.</summary>
    public static Tensor FromArray(ReadOnlySpan<float> data, params int[] shape)
    {
        if (ShapeUtil.Count(shape) != data.Length)
            throw new ArgumentException($"{data.Length} values do not fill shape {ShapeUtil.Format(shape)}.", nameof(shape));
        var t = Create(shape, DType.Float32, zeroed: false);
        if (!t.IsEmpty) data.CopyTo(t.AsSpan());
        return t;
    }

    /// <summary>A new tensor of normally distributed values (mean 0, standard deviation <paramref name="std"/>).</summary>
    public static Tensor RandN(int[] shape, Random random, float std = 1f)
    {
        ArgumentNullException.ThrowIfNull(random);
        var t = Create(shape, DType.Float32, zeroed: false);
        if (t.IsEmpty) return t;
        var span = t.AsSpan();
        for (int i = 0; i < span.Length; i++) span[i] = (float)(random.NextGaussian() * std);
        return t;
    }

    /// <summary>A new tensor of values uniform in [<paramref name="low"/>, <paramref name="high"/>).</summary>
    public static Tensor Uniform(int[] shape, Random random, float low, float high)
    {
        ArgumentNullException.ThrowIfNull(random);
        var t = Create(shape, DType.Float32, zeroed: false);
        if (t.IsEmpty) return t;
        var span = t.AsSpan();
        for (int i = 0; i < span.Length; i++) span[i] = (float)(low + (high - low) * random.NextDouble());
        return t;
    }

    /// <summary>A new uninitialised tensor (contents undefined) on <paramref name="device"/> (default: the CPU). Owned by the current scope, if any.</summary>
    internal static Tensor Empty(int[] shape, DType dtype = DType.Float32, Device device = default) => Create(shape, dtype, zeroed: false, device: device);

    /// <summary>A new uninitialised float32 tensor on <paramref name="device"/>.</summary>
    internal static Tensor Empty(int[] shape, Device device) => Create(shape, DType.Float32, zeroed: false, device: device);

    internal static Tensor Create(int[] shape, DType dtype, bool zeroed, bool scoped = true, Device device = default)
    {
        ShapeUtil.Validate(shape);
        long bytes = ShapeUtil.Count(shape) * dtype.ElementSize();
        TensorStorage storage = device.Type == DeviceType.Cpu
            ? EmptyWeights.IsActive ? new EmptyStorage(bytes) : new CpuStorage(bytes, zeroed)
            : Backends.DeviceBackends.Provider(device).Allocate(device, bytes, zeroed);
        return OnStorage(storage, shape, dtype, scoped);
    }

    /// <summary>A dense tensor over <paramref name="storage"/> (which must hold at least its bytes).</summary>
    internal static Tensor OnStorage(TensorStorage storage, int[] shape, DType dtype, bool scoped)
    {
        ShapeUtil.Validate(shape);
        if (storage.ByteLength < ShapeUtil.Count(shape) * dtype.ElementSize())
            throw new ArgumentException($"Storage of {storage.ByteLength} bytes is too small for {ShapeUtil.Format(shape)} {dtype}.");
        return new Tensor(storage, (int[])shape.Clone(), ShapeUtil.ContiguousStrides(shape), 0, dtype, scoped);
    }

    /// <summary>
    /// Turns this tensor into a parameter: removed from any scope, so it lives until disposed by its owner
    /// (a module), and marked as requiring gradients when <paramref name="trainable"/>.
    /// </summary>
    internal Tensor AsParameter(bool trainable)
    {
        TensorScope.Current?.Keep(this);
        RequiresGrad = trainable;
        return this;
    }

    /// <summary>
    /// Gives an empty parameter (<see cref="IsEmpty"/>) its memory, in <paramref name="dtype"/>, and returns its bytes for
    /// the loader to fill. A 16-bit parameter is frozen (only float32 tensors train). Views of the empty tensor are not
    /// updated (there are none: it had no memory to view).
    /// </summary>
    /// <exception cref="InvalidOperationException">The tensor is not empty.</exception>
    internal Span<byte> Materialize(DType dtype)
    {
        if (!IsEmpty) throw new InvalidOperationException($"{DescribeForError()} already has its memory; only an empty parameter can be materialized.");
        RequireDenseLeaf($"Materialize({dtype})", "materialize parameters only", "materialize the tensor it views");
        using var memory = Create(_shape, dtype, zeroed: false, scoped: false);
        ReplaceStorage(memory, dtype);
        if (dtype != DType.Float32) _requiresGrad = false;
        return RawDataSpan();
    }

    internal Tensor View(int[] shape, long[] strides, long offset)
    {
        Storage.AddRef();
        return new Tensor(Storage, shape, strides, offset, DType, scoped: true);
    }

    // ---- conversions -----------------------------------------------------------------------------------

    /// <summary>
    /// A copy on <paramref name="device"/> (same shape and dtype, dense), or this tensor when already there. Not recorded
    /// by autograd: move parameters and inputs, not activations. Owned by the current scope, if any.
    /// </summary>
    /// <exception cref="Backends.DeviceNotAvailableException">
    /// The device is a GPU and its backend is not registered (PeftGen.Cuda's <c>CudaSupport.Register()</c>), or finds no
    /// library, driver or device.
    /// </exception>
    public Tensor To(Device device) => device == Device ? this : ToDevice(device, scoped: true);

    /// <summary>
    /// Moves this tensor's data to <paramref name="device"/> in place (PyTorch's <c>module.to(device)</c> for one
    /// parameter): the tensor gets a dense copy of its elements on the device and lets go of its old storage. Views
    /// taken before the move keep the old storage. Gradients are dropped.
    /// </summary>
    /// <exception cref="InvalidOperationException">The tensor is not a leaf (an activation recorded by autograd).</exception>
    /// <exception cref="Backends.DeviceNotAvailableException">The device is a GPU whose backend is not registered or not usable.</exception>
    public void MoveTo(Device device)
    {
        if (device == Device) return;
        RequireDenseLeaf($"MoveTo({device})", "move parameters and inputs only", "move the tensor it views instead");
        using var moved = ToDevice(device, scoped: false);
        ReplaceStorage(moved, DType);
    }

    /// <summary>Throws unless this tensor is a dense leaf whose storage may be replaced in place.</summary>
    private void RequireDenseLeaf(string operation, string leafAdvice, string viewAdvice)
    {
        if (IsRecorded)
            throw new InvalidOperationException($"{operation}: {DescribeForError()} is an activation recorded by autograd; {leafAdvice}.");
        if (!IsContiguous || Offset != 0)
            throw new InvalidOperationException($"{operation}: {DescribeForError()} is a view (strided or offset); {viewAdvice}.");
    }

    /// <summary>Takes <paramref name="replacement"/>'s storage (and type) as this tensor's own, dropping the gradient and releasing the old storage.</summary>
    private void ReplaceStorage(Tensor replacement, DType dtype)
    {
        ZeroGrad();
        replacement.Storage.AddRef();
        var old = Interlocked.Exchange(ref _storage, replacement.Storage);
        DType = dtype;
        old?.Release();
    }

    private Tensor ToDevice(Device device, bool scoped)
    {
        if (!IsContiguous)
        {
            // Make a dense copy where the data is, then move that.
            using var dense = Create(_shape, DType, zeroed: false, scoped: false, device: Device);
            if (Device.Type == DeviceType.Cpu) CopyRawStrided(this, dense);
            else Backends.Backend.Of(this).CopyStrided(this, dense, accumulate: false);
            return dense.ToDevice(device, scoped);
        }
        var result = Create(_shape, DType, zeroed: false, scoped, device);
        try
        {
            Backends.DeviceBackends.CopyBetweenDevices(this, result);
        }
        catch
        {
            result.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>A copy in another element type (float32 ⇄ bfloat16 / float16) on the same device; this tensor when already <paramref name="dtype"/>.</summary>
    public Tensor To(DType dtype) => dtype == DType ? this : ConvertDType(dtype, scoped: true);

    /// <summary>
    /// Converts this leaf tensor's elements to <paramref name="dtype"/> in place, on its device: the tensor gets a new storage
    /// of converted values and lets go of the old one (views taken before keep it), so every module that holds the tensor
    /// (a <see cref="Nn.Linear"/>'s weight, an embedding tied to the output head) follows. This is how a frozen float32
    /// weight becomes a 16-bit one that halves its memory; gradients are dropped.
    /// </summary>
    /// <exception cref="InvalidOperationException">
    /// The tensor is an activation or a view, or it requires gradients and <paramref name="dtype"/> is not float32 (only
    /// float32 tensors train: freeze it first).
    /// </exception>
    internal void ConvertInPlace(DType dtype)
    {
        if (dtype == DType) return;
        RequireDenseLeaf($"ConvertInPlace({dtype})", "convert parameters only", "convert the tensor it views instead");
        if (RequiresGrad && dtype != DType.Float32)
            throw new InvalidOperationException($"ConvertInPlace({dtype}): {DescribeForError()} requires gradients and only float32 tensors train; freeze it (RequiresGrad = false) first.");
        using var converted = ConvertDType(dtype, scoped: false);
        ReplaceStorage(converted, dtype);
    }

    private Tensor ConvertDType(DType dtype, bool scoped)
    {
        var source = this;
        Tensor? dense = null;
        if (!IsContiguous)
        {
            source = dense = Create(_shape, DType, zeroed: false, scoped: false, device: Device);
            if (Device.Type == DeviceType.Cpu) CopyRawStrided(this, dense);
            else Backends.Backend.Of(this).CopyStrided(this, dense, accumulate: false);
        }
        try
        {
            var result = Create(_shape, dtype, zeroed: false, scoped, Device);
            try
            {
                Backends.Backend.Of(source).ConvertDType(source, result);
            }
            catch
            {
                result.Dispose();
                throw;
            }
            return result;
        }
        finally
        {
            dense?.Dispose();
        }
    }

    /// <summary>Element-by-element copy of a strided view of any dtype into a dense tensor of the same dtype.</summary>
    private static void CopyRawStrided(Tensor src, Tensor dst)
    {
        int size = src.DType.ElementSize();
        var index = new int[src.Rank];
        byte* s0 = ((HostStorage)src.Storage).Pointer, d = dst.RawData;
        for (long i = 0; i < src.Count; i++)
        {
            long off = src.Offset;
            for (int k = 0; k < index.Length; k++) off += index[k] * src._strides[k];
            Buffer.MemoryCopy(s0 + off * size, d + i * size, size, size);
            for (int k = index.Length - 1; k >= 0 && ++index[k] == src._shape[k]; k--) index[k] = 0;
        }
    }

    // ---- operator sugar (all recorded by autograd) ------------------------------------------------------

    /// <summary>Same data in a new shape (a view when contiguous). One dimension may be -1.</summary>
    public Tensor Reshape(params int[] shape) => Ops.Reshape(this, shape);

    /// <summary>Swaps two dimensions (a view).</summary>
    public Tensor Transpose(int dim0, int dim1) => Ops.Transpose(this, dim0, dim1);

    /// <summary>Reorders dimensions (a view).</summary>
    public Tensor Permute(params int[] dims) => Ops.Permute(this, dims);

    /// <summary>Elements [start, start + length) along <paramref name="dim"/> (a view).</summary>
    public Tensor Slice(int dim, int start, int length) => Ops.Slice(this, dim, start, length);

    /// <summary>A dense row-major copy, or this tensor when already contiguous.</summary>
    public Tensor Contiguous() => IsContiguous ? this : Ops.Contiguous(this);

    /// <summary>Elementwise sum.</summary>
    public static Tensor operator +(Tensor a, Tensor b) => Ops.Add(a, b);

    /// <summary>Elementwise difference.</summary>
    public static Tensor operator -(Tensor a, Tensor b) => Ops.Add(a, b, beta: -1f);

    /// <summary>Elementwise product.</summary>
    public static Tensor operator *(Tensor a, Tensor b) => Ops.Mul(a, b);

    /// <summary>Multiplication by a scalar.</summary>
    public static Tensor operator *(Tensor a, float s) => Ops.Scale(a, s);

    /// <summary>Multiplication by a scalar.</summary>
    public static Tensor operator *(float s, Tensor a) => Ops.Scale(a, s);

    // ---- lifetime ---------------------------------------------------------------------------------------

    /// <summary>
    /// Drops this activation's values but keeps the tensor as a node of the autograd graph (shape, device, gradient):
    /// for an activation no backward closure reads, so its memory goes back to the pool before the step's scope ends
    /// (LoRA-FA and frozen layers need only their output gradient). Views taken earlier keep the values alive.
    /// </summary>
    internal void ReleaseValues()
    {
        var storage = _storage;
        if (storage == null || storage is ReleasedStorage) return;
        Interlocked.Exchange(ref _storage, new ReleasedStorage(storage.Device))?.Release();
    }

    /// <summary>Releases this tensor's hold on its storage (shared views keep it alive) and its gradient.</summary>
    public void Dispose()
    {
        var storage = Interlocked.Exchange(ref _storage, null);
        if (storage == null) return;
        storage.Release();
        if (IsLeaf) ZeroGrad();
    }

    internal void RequireCpu(DType dtype)
    {
        if (Storage.Device.Type != DeviceType.Cpu)
            throw new InvalidOperationException($"{DescribeForError()} is on {Device}; this operation needs a CPU tensor.");
        if (DType != dtype)
            throw new InvalidOperationException($"{DescribeForError()} is {DType}; this operation needs {dtype}. Convert with To(DType.{dtype}).");
    }

    internal string DescribeForError() => $"tensor {(Name != null ? $"'{Name}' " : "")}{ShapeUtil.Format(_shape)}";

    /// <inheritdoc />
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append("Tensor").Append(ShapeUtil.Format(_shape)).Append(' ').Append(DType).Append(' ').Append(IsDisposed ? "disposed" : Device.ToString());
        if (Name != null) sb.Append(" '").Append(Name).Append('\'');
        if (RequiresGrad) sb.Append(" requires_grad");
        return sb.ToString();
    }
}
