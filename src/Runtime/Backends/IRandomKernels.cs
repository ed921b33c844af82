using PeftGen.Tensors;

namespace PeftGen.Backends;

/// <summary>
/// Random masks drawn where the tensor lives (a GPU backend implements it; the CPU draws from <see cref="Rng"/> directly).
/// <see cref="Ops.Dropout"/> takes one 64-bit seed from the run's <see cref="Rng"/> per call and lets the device expand
/// it, so no mask crosses the bus and a resumed run, whose <see cref="Rng"/> state is restored, draws the same masks.
/// </summary>
internal interface IRandomKernels
{
    /// <summary>
    /// Fills dense float32 <paramref name="mask"/> with inverted-dropout factors: element i is 0 with probability
    /// <paramref name="p"/> and <paramref name="keep"/> otherwise, a pure function of (<paramref name="seed"/>, i).
    /// </summary>
    void DropoutMask(Tensor mask, float p, float keep, ulong seed);
}
