namespace PeftGen.Methods;

/// <summary>One adapted layer of an adapter, as planned (a row of LoRA's and VeRA's plans): where, shapes, rank, scaling, trainable parameters.</summary>
/// <param name="Path">Module path, e.g. model.layers.0.self_attn.q_proj.</param>
/// <param name="InFeatures">Input size.</param>
/// <param name="OutFeatures">Output size.</param>
/// <param name="Rank">Rank r.</param>
/// <param name="Alpha">Alpha (1 for VeRA).</param>
/// <param name="Scaling">Applied scaling.</param>
/// <param name="Quantized">The base is stored 4-bit.</param>
/// <param name="TrainableParameters">LoRA: r·(in + out) (r·out under LoRA-FA), plus out for DoRA; VeRA: out + r.</param>
public sealed record AdaptedLayer(string Path, int InFeatures, int OutFeatures, int Rank, float Alpha, float Scaling, bool Quantized, long TrainableParameters);
