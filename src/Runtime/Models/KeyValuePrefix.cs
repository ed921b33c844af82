using PeftGen.Tensors;

namespace PeftGen.Models;

/// <summary>
/// Keys and values one attention layer attends to before the input's, in attention layout: <see cref="Keys"/> and
/// <see cref="Values"/> are [batch, n, kvHeads, headDim]. The keys carry no rotary embedding (they go straight into the
/// key/value sequence, as a cache's entries would), and the input's positions start at n.
/// </summary>
/// <param name="Keys">Prefix keys [b, n, kvHeads, headDim].</param>
/// <param name="Values">Prefix values [b, n, kvHeads, headDim].</param>
public sealed record KeyValuePrefix(Tensor Keys, Tensor Values);
