using PeftGen.Backends;
using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>
/// Adam with decoupled weight decay (Loshchilov and Hutter), matching <c>torch.optim.AdamW</c>: bias-corrected
/// moments, decay applied as p ← p·(1 − lr·λ) before the Adam step. Parameters without a gradient are skipped.
/// </summary>
public sealed class AdamW : AdamWBase
{
    /// <summary>Creates an optimizer over one group of parameters.</summary>
    /// <remarks>
    /// <paramref name="paged"/> keeps the moments in file-backed memory the OS can page out (see
    /// <see cref="AdamWBase.Paged"/>); the arithmetic is the same either way.
    /// </remarks>
    public AdamW(IEnumerable<Tensor> parameters, float learningRate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 0.01f, bool paged = false)
        : this([new ParameterGroup((parameters ?? throw new ArgumentNullException(nameof(parameters))).ToList())],
            learningRate, beta1, beta2, eps, weightDecay, paged)
    {
    }

    /// <summary>Creates an optimizer over several parameter groups.</summary>
    /// <remarks>
    /// <paramref name="paged"/> keeps the moments in file-backed memory the OS can page out (see
    /// <see cref="AdamWBase.Paged"/>); the arithmetic is the same either way.
    /// </remarks>
    public AdamW(IEnumerable<ParameterGroup> groups, float learningRate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 0.01f, bool paged = false)
        : base(groups, learningRate, beta1, beta2, eps, weightDecay, paged)
    {
    }

    private readonly List<(IOptimizerKernels Backend, AdamWUpdate Update)> _pending = []; // GPU updates of the current step

    private protected override string StateKind => "AdamW";

    private protected override OptimizerMoments CreateMoments(Tensor p) => new FullMoments(p, Paged);

    private protected override void Update(Tensor p, Tensor grad, OptimizerMoments moments, float lr, float weightDecay, float bc1, float bc2)
    {
        var full = (FullMoments)moments;
        if (p.Device.Type != DeviceType.Cpu && p.IsContiguous && grad.IsContiguous && Backend.Of(p) is IOptimizerKernels kernels)
        {
            // GPU tensors are updated together in one multi-tensor launch per device at the end of the step.
            _pending.Add((kernels, new AdamWUpdate(p, grad, full.M, full.V, lr, weightDecay)));
            return;
        }
        Backend.Of(p).AdamWStep(p, grad, full.M, full.V, lr, Beta1, Beta2, Eps, weightDecay, bc1, bc2);
    }

    private protected override void FlushUpdates(float bc1, float bc2)
    {
        foreach (var backend in _pending.Select(e => e.Backend).Distinct().ToArray())
            backend.AdamWMultiStep(_pending.Where(e => e.Backend == backend).Select(e => e.Update).ToArray(), Beta1, Beta2, Eps, bc1, bc2);
        _pending.Clear();
    }
}
