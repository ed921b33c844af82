namespace PeftGen.Optim;

/// <summary>
/// Restricts which entries of the trainable parameters learn (sparse fine-tuning): called once per optimizer step,
/// after the gradients of every micro-batch are summed and before clipping, so the gradient norm and the optimizer
/// moments see only the entries that train.
/// </summary>
public interface IGradientMask
{
    /// <summary>Zeroes the gradient entries that must not train.</summary>
    void MaskGradients();
}
