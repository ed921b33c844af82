using PeftGen.Backends;
using PeftGen.Tensors;

namespace PeftGen.Autograd;

/// <summary>
/// The record of differentiable ops run on this thread since the last backward pass. Each op that reads a
/// tensor requiring gradients appends a node holding its output and a closure that turns the output's
/// gradient into gradients of its inputs. Backward replays the nodes in reverse.
/// </summary>
internal sealed class Tape
{
    [ThreadStatic] private static Tape? t_current;

    private readonly List<Node> _nodes = new();

    public static Tape Current => t_current ??= new Tape();

    public int Count => _nodes.Count;

    /// <summary>True when an op reading these inputs must be recorded.</summary>
    public static bool ShouldRecord(Tensor a) => GradMode.IsEnabled && a.RequiresGrad;

    /// <inheritdoc cref="ShouldRecord(Tensor)"/>
    public static bool ShouldRecord(Tensor a, Tensor b) => GradMode.IsEnabled && (a.RequiresGrad || b.RequiresGrad);

    /// <inheritdoc cref="ShouldRecord(Tensor)"/>
    public static bool ShouldRecord(Tensor a, Tensor b, Tensor? c) =>
        GradMode.IsEnabled && (a.RequiresGrad || b.RequiresGrad || (c?.RequiresGrad ?? false));

    /// <summary>Marks <paramref name="output"/> as produced by a differentiable op and records its backward.</summary>
    public static void Record(Tensor output, Action backward)
    {
        output.RequiresGrad = true;
        output.IsRecorded = true;
        Current._nodes.Add(new Node(output, backward, WorkProfiler.GemmKind));
    }

    /// <summary>Drops nodes recorded after <paramref name="count"/> (their tensors are being released).</summary>
    public void Truncate(int count)
    {
        if (_nodes.Count > count) _nodes.RemoveRange(count, _nodes.Count - count);
    }

    /// <summary>
    /// Runs <paramref name="body"/> with a fresh tape as this thread's current one (gradient checkpointing
    /// replays a segment and back-propagates it on its own tape in the middle of an outer backward pass).
    /// </summary>
    public static void RunIsolated(Action<Tape> body)
    {
        var outer = t_current;
        var inner = new Tape();
        t_current = inner;
        try
        {
            body(inner);
        }
        finally
        {
            inner._nodes.Clear();
            t_current = outer;
        }
    }

    public void Backward(Tensor root, Tensor? seedGradient = null)
    {
        if (!root.RequiresGrad)
            throw new InvalidOperationException($"Backward() on {root.DescribeForError()}, which does not require gradients: no trainable parameter was used to compute it.");
        if (seedGradient == null && root.Count != 1)
            throw new InvalidOperationException($"Backward() needs a scalar (one-element) loss; {root.DescribeForError()} has {root.Count} elements.");
        using (GradMode.Disable())
        {
            var seed = Grads.Buffer(root, out bool accumulate);
            if (seedGradient != null) Backends.Backend.Of(seed).CopyStrided(seedGradient, seed, accumulate);
            else if (seed.Device.Type == DeviceType.Cpu) seed.AsSpan()[0] = accumulate ? seed.AsSpan()[0] + 1f : 1f;
            else if (!accumulate) Backends.Backend.Of(seed).Fill(seed, 1f); // a GPU loss: its seed is set where it lives
            else
            {
                using var one = Tensor.Empty([1], seed.Device);
                Backends.Backend.Of(seed).Fill(one, 1f);
                Backends.Backend.Of(seed).CopyStrided(one, seed, accumulate: true);
            }
            for (int i = _nodes.Count - 1; i >= 0; i--)
            {
                var node = _nodes[i];
                if (node.Output.Grad == null || node.Output.IsDisposed) continue; // not on a path to the root
                if (WorkProfiler.IsEnabled) WorkProfiler.RunBackward(node.GemmKind, node.Backward);
                else node.Backward();
                // An intermediate's gradient is dead once pushed to its inputs: free it now, not at scope end.
                node.Output.Grad.Dispose();
                node.Output.Grad = null;
            }
        }
        _nodes.Clear();
    }

    /// <summary>A recorded op: its output, its backward closure, and what the GEMMs it issued were for (for <see cref="WorkProfiler"/>).</summary>
    private readonly record struct Node(Tensor Output, Action Backward, WorkKind GemmKind);
}

/// <summary>Gradient buffers: allocated on first use, accumulated into afterwards.</summary>
internal static class Grads
{
    /// <summary>
    /// The gradient buffer of <paramref name="t"/>, allocating it uninitialised when missing.
    /// <paramref name="accumulate"/> tells the caller to add (an existing gradient) or overwrite (a new one).
    /// Leaf gradients outlive the step's scope; intermediate ones die with it.
    /// </summary>
    public static Tensor Buffer(Tensor t, out bool accumulate)
    {
        accumulate = t.Grad != null;
        if (t.Grad == null)
        {
            t.Grad = Tensor.Create(t.ShapeArray, DType.Float32, zeroed: false, scoped: t.IsRecorded, device: t.Device);
            t.Grad.Name = t.Name is null ? null : t.Name + ".grad";
        }
        return t.Grad;
    }

    /// <summary>
    /// Hands <paramref name="g"/>, the finished gradient of an op's output, to <paramref name="t"/> as its gradient without
    /// copying, when that is safe: t is an intermediate (recorded) tensor of g's shape with no gradient yet. Then t's
    /// gradient is a view of g's storage (g itself is dead once its op's backward returns, so later accumulation into t's
    /// gradient harms nothing). Give one g to at most one input. False: the caller copies as usual.
    /// </summary>
    public static bool TryShare(Tensor t, Tensor g)
    {
        if (t.Grad != null || !t.IsRecorded || !g.IsContiguous || t.DType != g.DType || t.Device != g.Device
            || !ShapeUtil.SameShape(t.Shape, g.Shape))
            return false;
        t.Grad = g.View(t.ShapeArray, ShapeUtil.ContiguousStrides(t.ShapeArray), g.Offset);
        t.Grad.Name = t.Name is null ? null : t.Name + ".grad";
        return true;
    }
}
