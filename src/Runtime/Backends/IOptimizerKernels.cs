using PeftGen.Tensors;

namespace PeftGen.Backends;

/// <summary>
/// Optimizer kernels a device backend may add to <see cref="IBackend"/>. <see cref="Optim.AdamW"/> batches a step's
/// updates of such a device into one <see cref="AdamWMultiStep"/> per backend, and <see cref="Optim.AdamW8bit"/> updates
/// its 8-bit state there with <see cref="AdamW8bitStep"/>. The CPU backend has neither: its tensors take
/// <see cref="IBackend.AdamWStep"/> and AdamW8bit's own CPU loop.
/// </summary>
internal interface IOptimizerKernels
{
    /// <summary>One AdamW update of every tensor in <paramref name="updates"/> (dense, on this backend's device), with per-tensor learning rate and decay.</summary>
    /// <param name="updates">The tensors and their moments.</param>
    /// <param name="beta1">β1.</param>
    /// <param name="beta2">β2.</param>
    /// <param name="eps">ε.</param>
    /// <param name="biasCorrection1">1 − β1ᵗ.</param>
    /// <param name="biasCorrection2">1 − β2ᵗ.</param>
    void AdamWMultiStep(IReadOnlyList<AdamWUpdate> updates, float beta1, float beta2, float eps, float biasCorrection1, float biasCorrection2);

    /// <summary>
    /// One 8-bit blockwise AdamW update of <paramref name="param"/> from <paramref name="grad"/>, with AdamW8bit's state
    /// layout (absmax m, absmax v, codes m, codes v) in <paramref name="state"/>, which
    /// <see cref="IDeviceBackendProvider.AllocateHostVisible"/> of the same device allocated.
    /// </summary>
    void AdamW8bitStep(Tensor param, Tensor grad, HostStorage state, int blocks, float lr, float beta1, float beta2, float eps,
        float weightDecay, float biasCorrection1, float biasCorrection2);
}

/// <summary>One tensor of a multi-tensor AdamW step: the parameter, its gradient, its moments, and its group's learning rate and decay.</summary>
internal readonly record struct AdamWUpdate(Tensor Param, Tensor Grad, Tensor M, Tensor V, float Lr, float WeightDecay);
