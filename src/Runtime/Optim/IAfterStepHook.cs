namespace PeftGen.Optim;

/// <summary>
/// Something that acts on the model right after each optimizer step, before gradients of the next step exist
/// (Delta-LoRA's base update, sparse fine-tuning's restore of untrained entries). The trainer calls every hook once per
/// applied step; skipped (non-finite) steps call none.
/// </summary>
public interface IAfterStepHook
{
    /// <summary>Called after the optimizer step of training step <paramref name="step"/> (1-based, as the trainer counts steps).</summary>
    void AfterStep(int step);
}
