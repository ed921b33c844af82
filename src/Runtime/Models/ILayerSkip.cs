namespace PeftGen.Models;

/// <summary>
/// A hook of a decoder stack (<see cref="Llama.LlamaModel.LayerSkip"/>): decides, before each decoder layer of a training
/// forward pass without a KV cache, whether the layer runs. A skipped layer passes its input on unchanged, records nothing
/// on the tape and its parameters get no gradient. Evaluation and generation always run every layer, so the hook is never
/// asked there. Null (the default) runs every layer at no cost.
/// </summary>
public interface ILayerSkip
{
    /// <summary>True when decoder layer <paramref name="layer"/> (0-based, asked in order for every layer) is skipped in this pass.</summary>
    bool ShouldSkip(int layer);
}
