using PeftGen.Autograd;

namespace PeftGen.Tensors;

public static partial class Ops
{
    /// <summary>
    /// Gradient checkpointing: runs <paramref name="segment"/> on <paramref name="x"/> without keeping its
    /// activations, and recomputes them during backward (one extra forward of the segment in exchange for its
    /// activation memory). Random generators in <paramref name="replayed"/> are rewound for the recomputation,
    /// so dropout draws the same masks. The segment must be a deterministic function of x and parameters.
    /// </summary>
    public static Tensor Checkpoint(Func<Tensor, Tensor> segment, Tensor x, IReadOnlyList<Rng>? replayed = null)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(x);
        if (!GradMode.IsEnabled) return segment(x);
        var rngStates = replayed?.Select(r => r.State).ToArray();
        Tensor y;
        using (var scope = TensorScope.Begin())
        using (GradMode.Disable())
            y = scope.Keep(segment(x));
        // Parameters inside the segment may need gradients even when x does not, so the node is always recorded.
        Tape.Record(y, () =>
        {
            var afterForward = replayed?.Select(r => r.State).ToArray();
            for (int i = 0; i < (replayed?.Count ?? 0); i++) replayed![i].State = rngStates![i];
            Tensor? inputGrad = null;
            using (var scope = TensorScope.Begin())
            using (GradMode.Enable())
                Tape.RunIsolated(tape =>
                {
                    var input = x.View(x.ShapeArray, x.StridesArray, x.Offset);                 // a fresh leaf over x's data
                    input.RequiresGrad = x.RequiresGrad;
                    var output = segment(input);
                    if (output.RequiresGrad) tape.Backward(output, y.Grad);
                    inputGrad = input.Grad;                                                      // a leaf gradient: not scope-owned
                    input.Grad = null;
                });
            // x's gradient buffer must belong to the outer step, so it is touched only after the replay scope closed.
            if (inputGrad != null)
            {
                AccumulateGrad(x, inputGrad);
                inputGrad.Dispose();
            }
            for (int i = 0; i < (replayed?.Count ?? 0); i++) replayed![i].State = afterForward![i];
        });
        return y;
    }
}
