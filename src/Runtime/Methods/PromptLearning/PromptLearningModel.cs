using System.Globalization;
using PeftGen.Autograd;
using PeftGen.Models;
using PeftGen.Models.Llama;
using PeftGen.Nn;
using PeftGen.Tensors;
using PeftGen.Text;

namespace PeftGen.Methods.PromptLearning;

/// <summary>
/// A Llama model with prompt-learning adapters (PEFT's <c>PeftModelForCausalLM</c> for PROMPT_TUNING, P_TUNING and
/// PREFIX_TUNING). The base model is frozen and unchanged; the adapters' encoders live beside it under PEFT's names
/// (<c>prompt_encoder.&lt;adapter&gt;.embedding.weight</c>, …) and plug into the model's <see cref="LlamaModel.VirtualTokens"/> hook, so
/// <see cref="LlamaForCausalLM.Forward"/>, <see cref="LlamaForCausalLM.Loss"/> and text generation use them unchanged.
/// The n virtual positions come first: prompt tuning and P-tuning put n embeddings before the input (positions
/// 0..n−1, the input at n…); prefix tuning adds n keys/values per layer and the input also starts at position n, as
/// transformers places tokens after a cache of n entries. Logits and losses cover the real tokens only (PEFT labels the
/// virtual positions −100). One adapter is active at a time; all adapters share one method, as in PEFT.
/// As a <see cref="Module"/> its parameters are the encoders' (<c>prompt_encoder.…</c>), so a trainer built on it
/// trains and checkpoints exactly them while the loss runs the base model.
/// </summary>
public sealed class PromptLearningModel : Module, IVirtualTokens, IAdaptedModel
{
    private readonly ModuleDict<PromptLearningEncoder> _encoders;
    private readonly Dictionary<string, PromptLearningConfig> _configs = new(StringComparer.Ordinal);
    private readonly HashSet<string> _loaded = new(StringComparer.Ordinal);
    private string? _active;
    private bool _disabled;

    private PromptLearningModel(LlamaForCausalLM model)
    {
        Model = model;
        _encoders = RegisterModule("prompt_encoder", new ModuleDict<PromptLearningEncoder>());
    }

    /// <summary>The base model (frozen; its <see cref="LlamaModel.VirtualTokens"/> hook is this object).</summary>
    public LlamaForCausalLM Model { get; }

    /// <summary>The PEFT method of the adapters: "PROMPT_TUNING", "PREFIX_TUNING" or "P_TUNING".</summary>
    public string PeftType => _configs.Values.First().PeftType;

    /// <summary>Names of the adapters, in the order they were added.</summary>
    public IEnumerable<string> Adapters => _configs.Keys;

    /// <summary>The adapter in use.</summary>
    public string ActiveAdapter => _active!;

    /// <summary>The configuration an adapter was created with.</summary>
    public PromptLearningConfig GetConfig(string adapter) =>
        _configs.TryGetValue(adapter, out var c) ? c : throw new KeyNotFoundException($"No adapter '{adapter}' (have: {string.Join(", ", _configs.Keys)}).");

    /// <summary>The encoder of an adapter (its table and, while training P-tuning or projected prefix tuning, its MLP).</summary>
    public PromptLearningEncoder Encoder(string adapter)
    {
        GetConfig(adapter);
        return _encoders[adapter];
    }

    /// <summary>
    /// Adds prompt learning to <paramref name="model"/> and freezes the base. <paramref name="tokenizer"/> is needed
    /// only for prompt tuning initialised from text.
    /// </summary>
    /// <exception cref="ArgumentException">A setting is invalid or does not fit the model (the message names it).</exception>
    /// <exception cref="NotSupportedException">P-tuning with an LSTM encoder (only MLP trains here).</exception>
    public static PromptLearningModel Create(LlamaForCausalLM model, PromptLearningConfig config, ITokenizer? tokenizer = null, string adapterName = "default") =>
        Create(model, config, tokenizer, adapterName, loaded: false);

    internal static PromptLearningModel Create(LlamaForCausalLM model, PromptLearningConfig config, ITokenizer? tokenizer, string adapterName, bool loaded)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(config);
        if (model.Model.VirtualTokens != null)
            throw new ArgumentException("The model already has prompt learning plugged in; add adapters to that PromptLearningModel instead.", nameof(model));
        var peft = new PromptLearningModel(model);
        peft.AddAdapter(adapterName, config, tokenizer, loaded);
        model.Freeze();
        model.Model.VirtualTokens = peft;
        return peft;
    }

    /// <summary>Adds another adapter of the same method (inactive until <see cref="SetAdapter"/>).</summary>
    /// <exception cref="ArgumentException">The name is taken, the method differs, or a setting does not fit the model.</exception>
    public void AddAdapter(string name, PromptLearningConfig config, ITokenizer? tokenizer = null) => AddAdapter(name, config, tokenizer, loaded: false);

    internal void AddAdapter(string name, PromptLearningConfig config, ITokenizer? tokenizer, bool loaded)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (_configs.ContainsKey(name)) throw new ArgumentException($"An adapter named '{name}' already exists.", nameof(name));
        if (_configs.Count > 0 && config.PeftType != PeftType)
            throw new ArgumentException($"Cannot combine adapters of different methods: this model has {PeftType} adapters, '{name}' is {config.PeftType}.", nameof(config));
        var c = Model.Config;
        if (config.NumVirtualTokens >= c.MaxPositionEmbeddings)
            throw new ArgumentException($"{config.PeftType}: num_virtual_tokens = {config.NumVirtualTokens} leaves no position for the input: the virtual tokens take positions 0..{config.NumVirtualTokens - 1} and max_position_embeddings is {c.MaxPositionEmbeddings}. Use fewer virtual tokens.", nameof(config));
        if (config is PrefixTuningConfig && Model.Model.GradientCheckpointing)
            throw new ArgumentException("Prefix tuning does not work with gradient checkpointing (as in PEFT); call DisableGradientCheckpointing() first.", nameof(config));
        var encoder = CreateEncoder(config, tokenizer, loaded);
        _encoders.Add(name, encoder);
        _configs.Add(name, config);
        if (loaded) _loaded.Add(name);
        SetAdapter(_active ?? name);
    }

    /// <summary>Makes <paramref name="name"/> the adapter in use (only it trains; a loaded adapter stays frozen, as in PEFT).</summary>
    public void SetAdapter(string name)
    {
        GetConfig(name);
        _active = name;
        foreach (var adapter in _configs.Keys)
            foreach (var (_, p) in _encoders[adapter].NamedParameters())
            {
                p.RequiresGrad = adapter == name && !_loaded.Contains(adapter);
                if (!p.RequiresGrad) p.ZeroGrad();
            }
    }

    /// <summary>Runs the base model without virtual tokens until the returned scope is disposed (PEFT's disable_adapter()).</summary>
    public IDisposable DisableAdapters()
    {
        _disabled = true;
        return new Restore(() => _disabled = false);
    }

    /// <summary>Removes an adapter (not the last one; <see cref="Unload"/> removes prompt learning altogether).</summary>
    public void DeleteAdapter(string name)
    {
        GetConfig(name);
        if (_configs.Count == 1) throw new InvalidOperationException($"'{name}' is the only adapter; call Unload() to remove prompt learning from the model.");
        _encoders.Remove(name);
        _configs.Remove(name);
        _loaded.Remove(name);
        if (_active == name) SetAdapter(_configs.Keys.First());
    }

    /// <summary>Unplugs prompt learning and returns the base model (PEFT's unload); the encoders are released.</summary>
    public LlamaForCausalLM Unload()
    {
        if (ReferenceEquals(Model.Model.VirtualTokens, this)) Model.Model.VirtualTokens = null;
        _encoders.Dispose();
        _configs.Clear();
        return Model;
    }

    /// <summary>Trainable parameters of an adapter: its table plus its MLP, if any.</summary>
    public long ParameterCount(string adapter) => Encoder(adapter).NamedParameters().Sum(p => p.Tensor.Count);

    /// <summary>PEFT's print_trainable_parameters line: "trainable params: … || all params: … || trainable%: …".</summary>
    public string TrainableParametersSummary()
    {
        var (baseTrainable, baseTotal) = Model.CountParameters();
        var (ownTrainable, ownTotal) = _encoders.CountParameters();
        long trainable = baseTrainable + ownTrainable, total = baseTotal + ownTotal;
        return string.Create(CultureInfo.InvariantCulture,
            $"trainable params: {trainable:N0} || all params: {total:N0} || trainable%: {100.0 * trainable / Math.Max(1, total):F4}");
    }

    /// <summary>
    /// The encoder output of an adapter, [n, token_dim] (prompt tuning, P-tuning) or [n, layers · 2 · kv_dim] (prefix
    /// tuning), as a new tensor: what PEFT saves as "prompt_embeddings".
    /// </summary>
    public Tensor PromptEmbeddings(string adapter)
    {
        float[] values;
        int[] shape;
        using (GradMode.Disable())
        using (TensorScope.Begin())
        {
            var output = Encoder(adapter).Forward();                                          // [n, width]
            values = output.ToArray();
            shape = output.ShapeArray.ToArray();
        }
        return Tensor.FromArray(values, shape);
    }

    /// <summary>The base model follows this module's training mode (layer drop and dropout in the base depend on it).</summary>
    protected override void OnTrainingModeChanged(bool training) => Model.Train(training);

    /// <summary>Unplugs prompt learning and disposes the model; the base class disposes the encoders.</summary>
    protected override void Dispose(bool disposing)
    {
        if (ReferenceEquals(Model.Model.VirtualTokens, this)) Model.Model.VirtualTokens = null;
        Model.Dispose();
    }

    // ---- IAdaptedModel: how the trainer trains and saves it --------------------------------------------------------------

    /// <summary>This module: its parameters are the encoders', the base model stays frozen.</summary>
    Module IAdaptedModel.TrainedModule => this;

    /// <summary>The base model, with the virtual tokens plugged in: it computes the loss and generates.</summary>
    LlamaForCausalLM IAdaptedModel.CausalLM => Model;

    /// <summary>The encoders draw nothing at random; the layer drop's generator when one is installed on the base model.</summary>
    public IReadOnlyList<Rng> RandomGenerators => AdaptedModel.Generators(Model);

    /// <summary>Prompt learning trains with the optimizer alone.</summary>
    public TrainingHooks PrepareTraining() => TrainingHooks.None;

    /// <summary>Writes the active adapter in PEFT's format (<see cref="PromptLearningAdapterFile"/>).</summary>
    public void SaveAdapter(string folder, string? baseModelNameOrPath = null) =>
        PromptLearningAdapterFile.Save(this, folder, ActiveAdapter, baseModelNameOrPath);

    // ---- the model's virtual-token hook ------------------------------------------------------------------------------

    /// <summary>Positions the active adapter occupies before the real tokens (0 while disabled).</summary>
    public int VirtualTokens => _disabled || _active == null ? 0 : _encoders[_active].VirtualTokens;

    /// <summary>The active adapter's virtual token embeddings [batch, n, hidden], or null (prefix tuning, or disabled).</summary>
    internal Tensor? VirtualTokenEmbeddings(int batch)
    {
        if (_disabled || _active == null || _configs[_active] is PrefixTuningConfig) return null;
        var e = _encoders[_active].Forward();                                                 // [n, hidden]
        return Repeat(e.Reshape(1, e.Size(0), e.Size(1)), batch);                             // [b, n, hidden]
    }

    /// <summary>The active prefix-tuning adapter's keys and values, one <see cref="KeyValuePrefix"/> per decoder layer, or null.</summary>
    internal IReadOnlyList<KeyValuePrefix>? KeyValuePrefixes(int batch)
    {
        if (_disabled || _active == null || _configs[_active] is not PrefixTuningConfig) return null;
        var c = Model.Config;
        int n = _encoders[_active].VirtualTokens, hkv = c.KeyValueHeads, d = c.HeadDim, kvDim = hkv * d;
        var flat = _encoders[_active].Forward();                                              // [n, layers · 2 · kv_dim]
        // PEFT's layout: view [n, layers · 2, kvHeads, headDim]; entry 2l is layer l's keys, 2l + 1 its values.
        var prefixes = new KeyValuePrefix[c.NumHiddenLayers];
        for (int l = 0; l < prefixes.Length; l++)
        {
            var keys = Ops.Slice(flat, 1, 2 * l * kvDim, kvDim).Reshape(1, n, hkv, d);       // [1, n, hkv, d]
            var values = Ops.Slice(flat, 1, (2 * l + 1) * kvDim, kvDim).Reshape(1, n, hkv, d);
            prefixes[l] = new KeyValuePrefix(Repeat(keys, batch), Repeat(values, batch));    // [b, n, hkv, d]
        }
        return prefixes;
    }

    int IVirtualTokens.Count => VirtualTokens;

    Tensor? IVirtualTokens.Embeddings(int batch) => VirtualTokenEmbeddings(batch);

    IReadOnlyList<KeyValuePrefix>? IVirtualTokens.KeyValues(int batch) => KeyValuePrefixes(batch);

    // ---- construction ------------------------------------------------------------------------------------------------

    private PromptLearningEncoder CreateEncoder(PromptLearningConfig config, ITokenizer? tokenizer, bool loaded)
    {
        var c = Model.Config;
        int n = config.NumVirtualTokens;
        var random = loaded ? null : new Random(config.Seed);
        switch (config)
        {
            case PromptTuningConfig prompt:
            {
                var encoder = new PromptEmbedding(n, c.HiddenSize, loaded, random);
                if (!loaded && prompt.Init == PromptTuningInit.Text) InitFromText(encoder, prompt, tokenizer);
                return encoder;
            }
            case PTuningConfig ptuning:
                if (ptuning.EncoderType == PromptEncoderType.Lstm && !loaded)
                    throw new NotSupportedException("P_TUNING: training an LSTM prompt encoder is not supported; use EncoderType = Mlp. (Adapters trained with an LSTM in PEFT load: their file holds the encoder's output.)");
                return new PromptEncoder(n, c.HiddenSize, ptuning.EncoderHiddenSize ?? c.HiddenSize, loaded, random);
            case PrefixTuningConfig prefix:
            {
                int kvDim = c.KeyValueHeads * c.HeadDim;
                return new PrefixEncoder(n, c.NumHiddenLayers, kvDim, prefix.PrefixProjection, prefix.EncoderHiddenSize ?? kvDim, loaded, random);
            }
            default:
                throw new ArgumentException($"Unknown prompt-learning config {config.GetType().Name}.", nameof(config));
        }
    }

    /// <summary>PEFT's TEXT init: the embeddings of the text's tokens (BOS first), repeated or cut to n.</summary>
    private void InitFromText(PromptEmbedding encoder, PromptTuningConfig config, ITokenizer? tokenizer)
    {
        if (tokenizer == null)
            throw new ArgumentException("PROMPT_TUNING: prompt_tuning_init = TEXT needs the model's tokenizer; pass it to Create.", nameof(tokenizer));
        if (tokenizer.VocabSize != Model.Config.VocabSize)
            throw new ArgumentException($"PROMPT_TUNING: the tokenizer has {tokenizer.VocabSize} tokens but the model's vocabulary has {Model.Config.VocabSize}; they do not belong together.", nameof(tokenizer));
        var ids = tokenizer.Encode(config.InitText!, addBos: true);
        if (ids.Length == 0) throw new ArgumentException($"PROMPT_TUNING: prompt_tuning_init_text \"{config.InitText}\" encodes to no tokens.", nameof(config));
        int n = encoder.VirtualTokens;
        var picked = new int[n];
        for (int i = 0; i < n; i++) picked[i] = ids[i % ids.Length];
        // A lookup rather than a span of the table: the model's table may be a frozen 16-bit one.
        using var noGrad = GradMode.Disable();
        using var rows = Ops.Embedding(Model.Model.EmbedTokens.Weight, picked, n);            // [n, hidden]
        rows.ToArray().CopyTo(encoder.Embedding.Weight.AsSpan());
    }

    /// <summary>x [1, ...] repeated <paramref name="batch"/> times along dimension 0.</summary>
    private static Tensor Repeat(Tensor x, int batch) => batch == 1 ? x : Ops.Concat(Enumerable.Repeat(x, batch).ToArray(), 0);
}

/// <summary>The prompt learning plugged into a Llama decoder stack, seen from the model.</summary>
public static class PromptLearningModelExtensions
{
    extension(LlamaModel model)
    {
        /// <summary>The <see cref="PromptLearningModel"/> plugged into this stack's <see cref="LlamaModel.VirtualTokens"/> hook, or null.</summary>
        public PromptLearningModel? PromptLearning => model.VirtualTokens as PromptLearningModel;
    }
}
