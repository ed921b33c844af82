using System.ComponentModel;
using PeftGen.Methods.LoRA;
using PeftGen.Nn;
using PeftGen.Quantization;
using PeftGen.Tensors;

namespace PeftGen.Generated;

/// <summary>
/// What the members the source generator writes for a <c>[LoRA]</c> class call: LoRA operations over the model's linear
/// layers given as a typed list of (PyTorch-style path, layer), the list generated <c>LinearLayers()</c> builds by reading
/// the model's members (no reflection, no path lookups), and the configuration rules generated code checks layers with.
/// </summary>
/// <remarks>
/// Namespace <c>PeftGen.Generated</c> holds the runtime API that only generated code calls; its types are hidden from
/// IntelliSense and may change with the generator that ships in the same package. Hand-written code uses the generated
/// members (<c>ApplyAdapters</c>, <c>SaveAdapter</c>, <c>LoadAdapter</c>, <c>NamedAdapterParameters</c>) or
/// <see cref="PeftModel"/> and <see cref="PeftAdapterFile"/>.
/// </remarks>
[EditorBrowsable(EditorBrowsableState.Never)]
public static class LoRAAdapterLayers
{
    /// <summary>
    /// The tensors of <paramref name="adapter"/> by their in-memory paths, which are PEFT's
    /// (<c>&lt;layer path&gt;.lora_A.&lt;adapter&gt;.weight</c>): each adapted layer's A [r, in], B [out, r] and DoRA magnitude
    /// [out], in the order of <paramref name="layers"/>.
    /// </summary>
    /// <param name="layers">The model's linear layers (adapted ones are <see cref="LoRALinear"/> wrappers).</param>
    /// <param name="adapter">The adapter's name.</param>
    /// <returns>Path and tensor of every adapter tensor.</returns>
    public static IReadOnlyList<(string Path, Tensor Tensor)> NamedParameters(IEnumerable<(string Path, LinearBase Layer)> layers, string adapter) =>
        AdapterLayers.NamedParameters(layers, adapter);

    /// <summary>
    /// The tensors of <paramref name="adapter"/> by Hugging Face PEFT file key (<c>base_model.model.&lt;path&gt;.lora_A.weight</c>;
    /// the adapter name is not part of a key), in the order of <paramref name="layers"/>.
    /// </summary>
    /// <param name="layers">The model's linear layers (adapted ones are <see cref="LoRALinear"/> wrappers).</param>
    /// <param name="adapter">The adapter's name.</param>
    /// <returns>File key and tensor of every adapter tensor.</returns>
    public static IReadOnlyList<(string Key, Tensor Tensor)> FileTensors(IEnumerable<(string Path, LinearBase Layer)> layers, string adapter) =>
        AdapterLayers.FileTensors(layers, adapter);

    /// <summary>
    /// Writes an adapter folder from the adapter's tensors given by file key (<c>base_model.model.&lt;path&gt;.lora_A.weight</c>
    /// [r, in], <c>.lora_B.weight</c> [out, r], <c>.lora_magnitude_vector</c> [out]), as <see cref="FileTensors"/> lists them;
    /// the biases <paramref name="config"/>'s bias mode saves come from <paramref name="model"/>. Written like
    /// <see cref="PeftAdapterFile.Save{TModel}(PeftModel{TModel}, string, string, string?)"/>: in full under temporary names,
    /// then renamed.
    /// </summary>
    /// <param name="model">The model the tensors belong to.</param>
    /// <param name="config">The adapter's configuration.</param>
    /// <param name="adapterTensors">File key and tensor of every adapter tensor.</param>
    /// <param name="folder">The adapter folder, created when missing.</param>
    /// <param name="baseModelNameOrPath">The config's <c>base_model_name_or_path</c>, or null.</param>
    public static void Save(Module model, LoRAConfig config, IReadOnlyList<(string Key, Tensor Tensor)> adapterTensors, string folder,
        string? baseModelNameOrPath = null) =>
        PeftAdapterFile.Save(model, config, adapterTensors, folder, baseModelNameOrPath);

    /// <summary>
    /// Loads the Hugging Face PEFT adapter in <paramref name="folder"/> onto <paramref name="model"/> as <paramref name="adapter"/>,
    /// with the folder's <c>adapter_config.json</c>: first checks that the keys and shapes of <c>adapter_model.safetensors</c> fit
    /// the layers <paramref name="linearLayers"/> lists (nothing changes when they do not), then freezes the model, wraps the
    /// adapted layers (quantizing their base per <paramref name="quantization"/>) and reads the weights through the wrapped
    /// layers. The model is owned by the result.
    /// </summary>
    /// <typeparam name="TModel">The model type.</typeparam>
    /// <param name="model">The model.</param>
    /// <param name="linearLayers">Lists the model's linear layers; called before and after the layers are wrapped.</param>
    /// <param name="quantization">4-bit storage of the adapted layers' bases (QLoRA), or null.</param>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="adapter">The name the adapter gets.</param>
    /// <returns>The adapted model.</returns>
    /// <exception cref="InvalidDataException">The config is invalid or does not fit the model, or keys and layers disagree; every mismatch is listed.</exception>
    public static PeftModel<TModel> Load<TModel>(TModel model, Func<IReadOnlyList<(string Path, LinearBase Layer)>> linearLayers,
        QuantizationConfig? quantization, string folder, string adapter) where TModel : Module =>
        AdapterLayers.Load(model, linearLayers, quantization, folder, adapter);

    /// <summary>
    /// Whether <paramref name="config"/> adapts the linear layer at <paramref name="path"/>: its targets select it and
    /// neither its exclusions nor its layer filter drop it (PEFT's rules).
    /// </summary>
    /// <param name="config">The adapter's configuration.</param>
    /// <param name="path">The layer's PyTorch-style path.</param>
    /// <returns>True when the layer is adapted.</returns>
    public static bool Adapts(LoRAConfig config, string path) => PeftModel.Adapts(config, path);

    /// <summary>The rank <paramref name="config"/> gives the layer at <paramref name="path"/>: its rank_pattern entry, else its rank.</summary>
    /// <param name="config">The adapter's configuration.</param>
    /// <param name="path">The layer's PyTorch-style path.</param>
    /// <returns>The layer's rank.</returns>
    public static int RankFor(LoRAConfig config, string path) => PeftModel.RankFor(config, path);
}
