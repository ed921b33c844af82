using System.CommandLine;
using System.Globalization;
using PeftGen.Data;
using PeftGen.IO;
using PeftGen.Methods;
using PeftGen.Methods.Bottleneck;
using PeftGen.Methods.DeltaLoRA;
using PeftGen.Methods.IA3;
using PeftGen.Methods.LayerDrop;
using PeftGen.Methods.LoRA;
using PeftGen.Methods.PromptLearning;
using PeftGen.Methods.Sparse;
using PeftGen.Methods.VeRA;
using PeftGen.Models.Llama;
using PeftGen.Quantization;
using PeftGen.Training;

namespace PeftGen.Cli;

/// <summary>How <c>peftgen train --method M</c> adapts the loaded model: the runtime's <c>Create</c> for the method, the load options it needs, and the trainer settings that come with it.</summary>
/// <param name="Method">The --method value.</param>
/// <param name="LoRA">The LoRA configuration for the LoRA family (lora, qlora, dora, lora-fa, delta-lora), else null.</param>
/// <param name="Quantization">The 4-bit storage of the adapted layers, or null.</param>
/// <param name="Load">How the model is loaded for the method.</param>
/// <param name="Adapt">Applies the method (and layer drop) to the loaded model: what <see cref="FineTuneSession.Open{TAdapted}"/> calls.</param>
/// <param name="LayerwiseDecay">--layerwise-lr-decay (1: off).</param>
internal sealed record MethodPlan(string Method, LoRAConfig? LoRA, QuantizationConfig? Quantization, ModelLoadOptions Load,
    Func<LlamaForCausalLM, IAdaptedModel> Adapt, float LayerwiseDecay);

/// <summary>
/// The options of <c>peftgen train</c> that choose and configure the PEFT method: <c>--method</c>, each method's settings
/// named as in PEFT's configs (kebab-case), and the companions (layer drop, layer-wise learning-rate decay). Every
/// method-specific option given for a method it does not apply to is refused, naming the option and the method.
/// </summary>
internal sealed class TrainMethods
{
    /// <summary>The values of --method.</summary>
    public static readonly string[] Names = ["lora", "qlora", "dora", "lora-fa", "vera", "ia3", "prompt", "prefix", "p-tuning", "bottleneck", "sparse", "delta-lora"];

    private static readonly string[] LoRAFamily = ["lora", "qlora", "dora", "lora-fa", "delta-lora"];
    private static readonly string[] PlainLoRA = ["lora", "qlora"];
    private static readonly string[] FourBit = ["lora", "qlora", "dora", "lora-fa", "vera"];
    private static readonly string[] PromptMethods = ["prompt", "prefix", "p-tuning"];
    private static readonly string[] Targeted = [.. LoRAFamily, "vera", "ia3", "sparse"];
    private static readonly string[] Layered = [.. LoRAFamily, "vera", "bottleneck"];
    private static readonly string[] NotPromptLearning = [.. Names.Except(PromptMethods)];

    private readonly List<(Option Option, string[] Methods)> _applies = [];

    /// <summary>
    /// Builds the options. Those of the earlier LoRA-only command line keep their names (--rank, --alpha, --dropout,
    /// --targets, --dora, --rslora), with PEFT's names as aliases.
    /// </summary>
    public TrainMethods()
    {
        Method = new Option<string>("--method")
        {
            Description = "PEFT method: lora, qlora (LoRA over a 4-bit base; the default), dora, lora-fa, vera, ia3, prompt (prompt tuning), prefix (prefix tuning), p-tuning, bottleneck, sparse, delta-lora. Options that do not apply to the method are refused",
            DefaultValueFactory = _ => "qlora",
        };
        Method.AcceptOnlyFromAmong(Names);

        Rank = Add(new Option<int>("--rank", "--r") { Description = "rank r (lora family; vera, where the default is 256)", DefaultValueFactory = _ => 8 }, [.. LoRAFamily, "vera"]);
        Alpha = Add(new Option<float>("--alpha", "--lora-alpha") { Description = "LoRA alpha (scaling alpha/r; lora family)", DefaultValueFactory = _ => 16f }, LoRAFamily);
        Dropout = Add(new Option<float>("--dropout", "--lora-dropout", "--vera-dropout") { Description = "dropout on the adapter input (lora family: default 0.05, 0 for delta-lora; vera: default 0)", DefaultValueFactory = _ => 0.05f }, [.. LoRAFamily, "vera"]);
        Targets = Add(new Option<string>("--targets", "--target-modules")
        {
            Description = "layers to adapt: all-linear, a list (q_proj,v_proj) or a regex (default all-linear; vera: q_proj,v_proj; ia3: k_proj,v_proj,down_proj; sparse: parameters or modules, all-linear)",
            DefaultValueFactory = _ => "all-linear",
        }, Targeted);
        Exclude = Add(new Option<string?>("--exclude-modules") { Description = "layers to leave alone even if targeted, a list (lora family, vera, ia3)" }, [.. LoRAFamily, "vera", "ia3"]);
        LayersToTransform = Add(new Option<string?>("--layers-to-transform") { Description = "only adapt these decoder layers, a list of indices such as 0,1,2 (lora family, vera, bottleneck)" }, Layered);
        Dora = Add(new Option<bool>("--dora", "--use-dora") { Description = "DoRA: train a magnitude vector per adapted layer (lora, qlora; --method dora sets it)" }, [.. PlainLoRA, "dora"]);
        RsLoRA = Add(new Option<bool>("--rslora", "--use-rslora") { Description = "rsLoRA: scale by alpha/sqrt(r) (lora family)" }, LoRAFamily);
        LoRAPlus = Add(new Option<float>("--lora-plus") { Description = "LoRA+ ratio: B learns this many times faster (0 disables; lora family)", DefaultValueFactory = _ => 0f }, LoRAFamily);
        Quant = Add(CommonOptions.Quant("nf4", "4-bit storage of the adapted layers' base: nf4 (the default of qlora), fp4, or none (the default of every other method); lora, qlora, dora, lora-fa and vera train over a 4-bit base"), FourBit);
        BlockSize = Add(new Option<int>("--block-size") { Description = "quantization block size (power of two, 32..4096)", DefaultValueFactory = _ => 64 }, FourBit);
        NoDoubleQuant = Add(new Option<bool>("--no-double-quant") { Description = "keep fp32 block scales (no double quantization)" }, FourBit);
        LoRAFACorrection = Add(new Option<bool>("--lora-fa-gradient-correction") { Description = "(lora-fa) correct B's gradient for the frozen A" }, ["lora-fa"]);
        DeltaStartStep = Add(new Option<int>("--delta-lora-start-step") { Description = "(delta-lora) steps that train only A and B before the base starts moving", DefaultValueFactory = _ => 500 }, ["delta-lora"]);
        DeltaUpdateRatio = Add(new Option<float>("--delta-lora-update-ratio") { Description = "(delta-lora) λ: the base moves by λ times the change of the scaled B·A", DefaultValueFactory = _ => 2f }, ["delta-lora"]);
        DInitial = Add(new Option<float>("--d-initial") { Description = "(vera) initial value of the vectors d", DefaultValueFactory = _ => 0.1f }, ["vera"]);
        ProjectionPrngKey = Add(new Option<int>("--projection-prng-key") { Description = "(vera) seed of the shared random projections", DefaultValueFactory = _ => 0 }, ["vera"]);
        SaveProjection = Add(new Option<bool>("--save-projection") { Description = "(vera) store the shared projections in the adapter file (--save-projection false leaves them out)", DefaultValueFactory = _ => true }, ["vera"]);
        FeedForward = Add(new Option<string?>("--feedforward-modules") { Description = "(ia3) targeted layers whose input is scaled instead of their output (default: down_proj when targeted; \"\" for none)" }, ["ia3"]);
        InitIA3Weights = Add(new Option<bool>("--init-ia3-weights") { Description = "(ia3) start the vectors at 1 (false: N(0, 1))", DefaultValueFactory = _ => true }, ["ia3"]);
        NumVirtualTokens = Add(new Option<int>("--num-virtual-tokens") { Description = "(prompt, prefix, p-tuning) virtual tokens", DefaultValueFactory = _ => 20 }, PromptMethods);
        PromptTuningInit = Add(new Option<string>("--prompt-tuning-init") { Description = "(prompt) how the virtual tokens start: RANDOM or TEXT (the embeddings of --prompt-tuning-init-text)", DefaultValueFactory = _ => "RANDOM" }, ["prompt"]);
        PromptTuningInit.AcceptOnlyFromAmong("RANDOM", "TEXT", "random", "text");
        PromptTuningInitText = Add(new Option<string?>("--prompt-tuning-init-text") { Description = "(prompt) text whose token embeddings start the virtual tokens" }, ["prompt"]);
        PrefixProjection = Add(new Option<bool>("--prefix-projection") { Description = "(prefix) produce the prefix with an MLP (reparameterisation)" }, ["prefix"]);
        EncoderHiddenSize = Add(new Option<int?>("--encoder-hidden-size") { Description = "(prefix with --prefix-projection, p-tuning) hidden width of the prompt encoder (default: the model's key/value width for prefix, hidden size for p-tuning)" }, ["prefix", "p-tuning"]);
        BottleneckSize = Add(new Option<int?>("--bottleneck-size") { Description = "(bottleneck) adapter width m (default: hidden size / --reduction-factor)" }, ["bottleneck"]);
        ReductionFactor = Add(new Option<int>("--reduction-factor") { Description = "(bottleneck) m = hidden size / factor when --bottleneck-size is not given", DefaultValueFactory = _ => 16 }, ["bottleneck"]);
        NonLinearity = Add(new Option<string>("--non-linearity") { Description = "(bottleneck) activation: relu, gelu or silu", DefaultValueFactory = _ => "relu" }, ["bottleneck"]);
        NonLinearity.AcceptOnlyFromAmong("relu", "gelu", "silu");
        Placement = Add(new Option<string>("--bottleneck-placement") { Description = "(bottleneck) adapted sublayer outputs: attention, mlp or both", DefaultValueFactory = _ => "both" }, ["bottleneck"]);
        Placement.AcceptOnlyFromAmong("attention", "mlp", "both");
        BottleneckBias = Add(new Option<bool>("--bottleneck-bias") { Description = "(bottleneck) biases on the down and up projections (--bottleneck-bias false: none)", DefaultValueFactory = _ => true }, ["bottleneck"]);
        SparseFraction = Add(new Option<float>("--sparse-fraction") { Description = "(sparse) share of the targeted entries that train, in (0, 1]", DefaultValueFactory = _ => 0.01f }, ["sparse"]);
        SparseScore = Add(new Option<string>("--sparse-score") { Description = "(sparse) how entries are chosen: gradient (Σ|g| over calibration batches), gradient-times-weight (Σ|g·w|), or none (whole tensors; needs --sparse-fraction 1)", DefaultValueFactory = _ => "gradient" }, ["sparse"]);
        SparseScore.AcceptOnlyFromAmong("gradient", "gradient-times-weight", "none");
        CalibrationBatches = Add(new Option<int>("--calibration-batches") { Description = "(sparse) training batches whose gradients score the entries", DefaultValueFactory = _ => 4 }, ["sparse"]);
        LayerDrop = Add(new Option<float>("--layer-drop") { Description = "layer drop: skip each decoder layer with this probability while training, in [0, 1) (0: off; any method)", DefaultValueFactory = _ => 0f }, Names);
        LayerDropSchedule = Add(new Option<string>("--layer-drop-schedule") { Description = "layer drop by depth: uniform, or linear (layer l of L skipped with p·(l+1)/L)", DefaultValueFactory = _ => "uniform" }, Names);
        LayerDropSchedule.AcceptOnlyFromAmong("uniform", "linear");
        LayerwiseDecay = Add(new Option<float>("--layerwise-lr-decay") { Description = "layer-wise learning-rate decay γ in (0, 1]: decoder layer i of L trains at lr·γ^(L−1−i) (1: off; every method but prompt learning)", DefaultValueFactory = _ => 1f }, NotPromptLearning);
        DryRun = Add(new Option<bool>("--dry-run") { Description = "print the predicted peak memory (weights, adapter, activations) and exit without loading or training (lora family)" }, LoRAFamily);
    }

    public Option<string> Method { get; }
    public Option<int> Rank { get; }
    public Option<float> Alpha { get; }
    public Option<float> Dropout { get; }
    public Option<string> Targets { get; }
    public Option<string?> Exclude { get; }
    public Option<string?> LayersToTransform { get; }
    public Option<bool> Dora { get; }
    public Option<bool> RsLoRA { get; }
    public Option<float> LoRAPlus { get; }
    public Option<string> Quant { get; }
    public Option<int> BlockSize { get; }
    public Option<bool> NoDoubleQuant { get; }
    public Option<bool> LoRAFACorrection { get; }
    public Option<int> DeltaStartStep { get; }
    public Option<float> DeltaUpdateRatio { get; }
    public Option<float> DInitial { get; }
    public Option<int> ProjectionPrngKey { get; }
    public Option<bool> SaveProjection { get; }
    public Option<string?> FeedForward { get; }
    public Option<bool> InitIA3Weights { get; }
    public Option<int> NumVirtualTokens { get; }
    public Option<string> PromptTuningInit { get; }
    public Option<string?> PromptTuningInitText { get; }
    public Option<bool> PrefixProjection { get; }
    public Option<int?> EncoderHiddenSize { get; }
    public Option<int?> BottleneckSize { get; }
    public Option<int> ReductionFactor { get; }
    public Option<string> NonLinearity { get; }
    public Option<string> Placement { get; }
    public Option<bool> BottleneckBias { get; }
    public Option<float> SparseFraction { get; }
    public Option<string> SparseScore { get; }
    public Option<int> CalibrationBatches { get; }
    public Option<float> LayerDrop { get; }
    public Option<string> LayerDropSchedule { get; }
    public Option<float> LayerwiseDecay { get; }
    public Option<bool> DryRun { get; }

    /// <summary>The methods' settings and companions (all but --method), in the order help lists them.</summary>
    public IEnumerable<Option> Settings => _applies.Select(a => a.Option);

    private T Add<T>(T option, string[] methods) where T : Option
    {
        _applies.Add((option, methods));
        return option;
    }

    /// <summary>True when the user typed <paramref name="option"/> (under any of its names).</summary>
    public static bool Given(ParseResult parse, Option option) => parse.GetResult(option) is { Implicit: false };

    /// <summary>The name the user typed for <paramref name="option"/> (an alias such as --lora-alpha), or its name.</summary>
    public static string Typed(ParseResult parse, Option option) => parse.GetResult(option)?.IdentifierToken?.Value ?? option.Name;

    /// <summary>Whether --method is in the LoRA family (the memory model and --dry-run cover these).</summary>
    public static bool IsLoRAFamily(string method) => LoRAFamily.Contains(method);

    /// <summary>
    /// Refuses every option typed for a method it does not apply to, and the settings each method cannot take
    /// (a 4-bit base for methods that train over float weights, dropout for Delta-LoRA, …), before anything loads.
    /// </summary>
    public void Check(ParseResult parse)
    {
        string method = parse.GetValue(Method)!;
        if (method == "delta-lora" && Given(parse, Quant) && parse.GetValue(Quant) != "none")
            throw new CliError($"--quant {parse.GetValue(Quant)} does not apply to --method delta-lora: Delta-LoRA moves the base weights, which must stay float32; give --quant none or use --method qlora.");
        foreach (var (option, methods) in _applies)
        {
            if (!Given(parse, option) || methods.Contains(method)) continue;
            // "--quant none" changes nothing, whatever the method.
            if (option == Quant && parse.GetValue(Quant) == "none") continue;
            string typed = option == Quant ? $"--quant {parse.GetValue(Quant)}" : Typed(parse, option);
            throw new CliError($"{typed} does not apply to --method {method}: it is a setting of {string.Join(", ", methods)}.");
        }
        if (method == "delta-lora" && Given(parse, Dropout) && parse.GetValue(Dropout) != 0)
            throw new CliError($"{Typed(parse, Dropout)} {Invariant(parse.GetValue(Dropout))}: Delta-LoRA trains without dropout (the base moves by the update the loss saw); give {Typed(parse, Dropout)} 0 or leave it out.");

        int rank = parse.GetValue(Rank);
        CommonOptions.Require(rank >= 1, Typed(parse, Rank), rank, "must be ≥ 1");
        float alpha = parse.GetValue(Alpha), dropout = parse.GetValue(Dropout), loraPlus = parse.GetValue(LoRAPlus);
        CommonOptions.Require(alpha > 0 && float.IsFinite(alpha), Typed(parse, Alpha), alpha, "must be a finite value > 0");
        CommonOptions.Require(dropout >= 0 && dropout < 1, Typed(parse, Dropout), dropout, "must be in [0, 1)");
        CommonOptions.Require(loraPlus >= 0 && float.IsFinite(loraPlus), "--lora-plus", loraPlus, "must be a finite value ≥ 0 (0 disables)");
        int block = parse.GetValue(BlockSize);
        CommonOptions.Require(QuantFor(parse) == "none" || (block >= 32 && block <= 4096 && (block & (block - 1)) == 0), "--block-size", block, "must be a power of two in 32..4096");
        CommonOptions.Require(parse.GetValue(DeltaStartStep) >= 0, "--delta-lora-start-step", parse.GetValue(DeltaStartStep), "must be ≥ 0");
        float ratio = parse.GetValue(DeltaUpdateRatio);
        CommonOptions.Require(ratio > 0 && float.IsFinite(ratio), "--delta-lora-update-ratio", ratio, "must be a finite value > 0");
        float dInitial = parse.GetValue(DInitial);
        CommonOptions.Require(dInitial != 0 && float.IsFinite(dInitial), "--d-initial", dInitial, "must be finite and non-zero (with b = 0 and d = 0 the adapter never trains)");
        CommonOptions.Require(parse.GetValue(NumVirtualTokens) >= 1, "--num-virtual-tokens", parse.GetValue(NumVirtualTokens), "must be ≥ 1");
        if (parse.GetValue(EncoderHiddenSize) is int encoder) CommonOptions.Require(encoder >= 1, "--encoder-hidden-size", encoder, "must be ≥ 1");
        if (method == "prefix" && Given(parse, EncoderHiddenSize) && !parse.GetValue(PrefixProjection))
            throw new CliError("--encoder-hidden-size sets the width of prefix tuning's MLP: add --prefix-projection, or leave --encoder-hidden-size out.");
        bool textInit = string.Equals(parse.GetValue(PromptTuningInit), "TEXT", StringComparison.OrdinalIgnoreCase);
        if (textInit && string.IsNullOrEmpty(parse.GetValue(PromptTuningInitText)))
            throw new CliError("--prompt-tuning-init TEXT starts the virtual tokens from the embeddings of a text: give it with --prompt-tuning-init-text.");
        if (!textInit && Given(parse, PromptTuningInitText))
            throw new CliError("--prompt-tuning-init-text is read with --prompt-tuning-init TEXT only: add --prompt-tuning-init TEXT.");
        if (parse.GetValue(BottleneckSize) is int size) CommonOptions.Require(size >= 1, "--bottleneck-size", size, "must be ≥ 1");
        CommonOptions.Require(parse.GetValue(ReductionFactor) >= 1, "--reduction-factor", parse.GetValue(ReductionFactor), "must be ≥ 1");
        float fraction = parse.GetValue(SparseFraction);
        CommonOptions.Require(fraction > 0 && fraction <= 1, "--sparse-fraction", fraction, "must be in (0, 1]");
        if (parse.GetValue(SparseScore) == "none" && fraction < 1)
            throw new CliError($"--sparse-score none trains whole tensors: give --sparse-fraction 1, or a score (gradient, gradient-times-weight) to choose {Invariant(fraction)} of the entries.");
        CommonOptions.Require(parse.GetValue(CalibrationBatches) >= 1, "--calibration-batches", parse.GetValue(CalibrationBatches), "must be ≥ 1");
        float drop = parse.GetValue(LayerDrop);
        CommonOptions.Require(drop >= 0 && drop < 1, "--layer-drop", drop, "must be in [0, 1) (0: off)");
        if (Given(parse, LayerDropSchedule) && drop == 0)
            throw new CliError("--layer-drop-schedule shapes layer drop: add --layer-drop P (a probability in (0, 1)).");
        float decay = parse.GetValue(LayerwiseDecay);
        CommonOptions.Require(decay > 0 && decay <= 1, "--layerwise-lr-decay", decay, "must be in (0, 1] (1: off)");
        ParseLayers(parse);
    }

    /// <summary>--quant for the method: what was typed, else nf4 for qlora and none for every other method.</summary>
    public string QuantFor(ParseResult parse) =>
        Given(parse, Quant) ? parse.GetValue(Quant)! : parse.GetValue(Method) == "qlora" ? "nf4" : "none";

    /// <summary>
    /// The method's configuration from the options, and how to apply it: the runtime model's <c>Create</c>
    /// (<see cref="PeftModel.Create{TModel}"/>, <see cref="VeraModel.Create{TModel}"/>, <see cref="IA3Model.Create{TModel}"/>,
    /// <see cref="PromptLearningModel.Create"/>, <see cref="BottleneckModel.Create{TModel}"/>, <see cref="SparseFineTuning.Create"/>),
    /// then <see cref="LayerDropper.Apply"/> when --layer-drop is given.
    /// </summary>
    public MethodPlan Plan(ParseResult parse, FineTuneOptions options)
    {
        string method = parse.GetValue(Method)!;
        int seed = options.Seed;
        var quantization = CommonOptions.Quantization(QuantFor(parse), parse.GetValue(BlockSize), !parse.GetValue(NoDoubleQuant));
        string TargetsOr(string fallback) => Given(parse, Targets) ? parse.GetValue(Targets)! : fallback;
        var exclude = parse.GetValue(Exclude) is { } e ? e.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [];
        var layers = ParseLayers(parse);
        var layerDrop = parse.GetValue(LayerDrop) is > 0 and var p
            ? new LayerDropConfig { Probability = p, Schedule = parse.GetValue(LayerDropSchedule) == "linear" ? Methods.LayerDrop.LayerDropSchedule.Linear : Methods.LayerDrop.LayerDropSchedule.Uniform, Seed = seed }
            : null;

        LoRAConfig? lora = null;
        ModelLoadOptions load = new() { FrozenWeights = FrozenWeightStorage.AsStored };
        Func<LlamaForCausalLM, IAdaptedModel> create;
        switch (method)
        {
            case "lora" or "qlora" or "dora" or "lora-fa" or "delta-lora":
                lora = new LoRAConfig
                {
                    Rank = parse.GetValue(Rank),
                    Alpha = parse.GetValue(Alpha),
                    Dropout = method == "delta-lora" ? 0f : parse.GetValue(Dropout),
                    Targets = TargetModules.Parse(TargetsOr("all-linear")),
                    Exclude = exclude,
                    Layers = layers,
                    UseDoRA = method == "dora" || parse.GetValue(Dora),
                    UseRsLoRA = parse.GetValue(RsLoRA),
                    UseLoRAFA = method == "lora-fa",
                    LoRAFAGradientCorrection = parse.GetValue(LoRAFACorrection),
                    DeltaLoRA = method == "delta-lora" ? new DeltaLoRAOptions { StartStep = parse.GetValue(DeltaStartStep), UpdateRatio = parse.GetValue(DeltaUpdateRatio) } : null,
                    Seed = seed,
                };
                var loraConfig = lora;
                // Delta-LoRA moves the base weights, which must be float32; the others keep frozen weights as stored and
                // quantize the adapted layers while reading them (QLoRA).
                load = method == "delta-lora" ? new ModelLoadOptions() : PeftModel.LoadOptions(loraConfig, quantization);
                create = model => PeftModel.Create(model, loraConfig, quantization);
                break;
            case "vera":
                var vera = new VeraConfig
                {
                    Rank = Given(parse, Rank) ? parse.GetValue(Rank) : 256,
                    Targets = TargetModules.Parse(TargetsOr("q_proj,v_proj")),
                    Exclude = exclude,
                    Layers = layers,
                    Dropout = Given(parse, Dropout) ? parse.GetValue(Dropout) : 0f,
                    DInitial = parse.GetValue(DInitial),
                    ProjectionSeed = parse.GetValue(ProjectionPrngKey),
                    SaveProjection = parse.GetValue(SaveProjection),
                    Seed = seed,
                };
                load = LoadOptionsFor(vera, quantization);
                create = model => CheckVeraRows(VeraModel.Create(model, vera, quantization), model);
                break;
            case "ia3":
                var targets = TargetModules.Parse(TargetsOr("k_proj,v_proj,down_proj"));
                var ia3 = new IA3Config
                {
                    Targets = targets,
                    FeedForward = FeedForwardFor(parse, targets),
                    Exclude = exclude,
                    InitWeights = parse.GetValue(InitIA3Weights),
                    Seed = seed,
                };
                create = model => IA3Model.Create(model, ia3);
                break;
            case "prompt" or "prefix" or "p-tuning":
                PromptLearningConfig prompt = method switch
                {
                    "prompt" => string.Equals(parse.GetValue(PromptTuningInit), "TEXT", StringComparison.OrdinalIgnoreCase)
                        ? new PromptTuningConfig { NumVirtualTokens = parse.GetValue(NumVirtualTokens), Init = Methods.PromptLearning.PromptTuningInit.Text, InitText = parse.GetValue(PromptTuningInitText), Seed = seed }
                        : new PromptTuningConfig { NumVirtualTokens = parse.GetValue(NumVirtualTokens), Seed = seed },
                    "prefix" => new PrefixTuningConfig { NumVirtualTokens = parse.GetValue(NumVirtualTokens), PrefixProjection = parse.GetValue(PrefixProjection), EncoderHiddenSize = parse.GetValue(EncoderHiddenSize), Seed = seed },
                    _ => new PTuningConfig { NumVirtualTokens = parse.GetValue(NumVirtualTokens), EncoderHiddenSize = parse.GetValue(EncoderHiddenSize), Seed = seed },
                };
                create = prompt is PromptTuningConfig { Init: Methods.PromptLearning.PromptTuningInit.Text }
                    ? model => PromptLearningModel.Create(model, prompt, Tokenizer(options, model))
                    : model => PromptLearningModel.Create(model, prompt);
                break;
            case "bottleneck":
                var bottleneck = new BottleneckConfig
                {
                    BottleneckSize = parse.GetValue(BottleneckSize),
                    ReductionFactor = parse.GetValue(ReductionFactor),
                    Activation = parse.GetValue(NonLinearity) switch { "gelu" => BottleneckActivation.Gelu, "silu" => BottleneckActivation.Silu, _ => BottleneckActivation.Relu },
                    Placement = parse.GetValue(Placement) switch { "attention" => BottleneckPlacement.Attention, "mlp" => BottleneckPlacement.Mlp, _ => BottleneckPlacement.Both },
                    Bias = parse.GetValue(BottleneckBias),
                    Layers = layers,
                    Seed = seed,
                };
                create = model => BottleneckModel.Create(model, bottleneck);
                break;
            case "sparse":
                var score = parse.GetValue(SparseScore) switch
                {
                    "none" => Methods.Sparse.SparseScore.None,
                    "gradient-times-weight" => Methods.Sparse.SparseScore.GradientTimesWeight,
                    _ => Methods.Sparse.SparseScore.GradientMagnitude,
                };
                var sparse = new SparseFineTuningConfig
                {
                    Targets = TargetModules.Parse(TargetsOr("all-linear")),
                    Score = score,
                    Fraction = parse.GetValue(SparseFraction),
                    CalibrationBatches = parse.GetValue(CalibrationBatches),
                };
                // Sparse fine-tuning trains base weights, so they load as float32; a score ranks entries by the gradients
                // of training batches (the dataset read here, with the settings the session reads it with).
                load = new ModelLoadOptions();
                create = score == Methods.Sparse.SparseScore.None
                    ? model => SparseFineTuning.Create(model, sparse)
                    : model => SparseFineTuning.Create(model, sparse, b => model.Loss(b.Inputs, b.Targets, b.BatchSize, b.Length), CalibrationBatchesFor(options, model));
                break;
            default:
                throw new CliError($"--method {method}: unknown method; use one of {string.Join(", ", Names)}.");
        }

        IAdaptedModel Adapt(LlamaForCausalLM model)
        {
            IAdaptedModel adapted;
            try
            {
                adapted = create(model);
                if (layerDrop != null) LayerDropper.Apply(model, layerDrop);
            }
            catch (ArgumentException e)
            {
                // The runtime names its settings as PEFT does (d_initial, feedforward modules, …); say which method was asked for.
                throw new CliError($"--method {method}: {WithoutParameterName(e.Message)}", e);
            }
            return adapted;
        }
        return new MethodPlan(method, lora, quantization, load, Adapt, parse.GetValue(LayerwiseDecay));
    }

    /// <summary>
    /// VeRA's load options: the layers it adapts are quantized while they are read when <paramref name="quantization"/>
    /// is given (the layers a LoRA adapter with the same targets, exclusions and layer filter would adapt: PEFT's rules);
    /// every other weight stays in the checkpoint's type.
    /// </summary>
    public static ModelLoadOptions LoadOptionsFor(VeraConfig vera, QuantizationConfig? quantization) =>
        PeftModel.LoadOptions(new LoRAConfig { Targets = vera.Targets, Exclude = vera.Exclude, Layers = vera.Layers }, quantization);

    /// <summary>Describes the adapted model on one line: the method, its size and its trainable parameters.</summary>
    public static string Describe(IAdaptedModel adapted, MethodPlan plan)
    {
        string text = adapted switch
        {
            PeftModel<LlamaForCausalLM> peft when plan.LoRA is { } c =>
                $"{(plan.Quantization is { } q ? $"QLoRA ({q.Type}{(q.DoubleQuant ? " + double quant" : "")})" : "LoRA")}{LoRAVariant(plan.Method, c)} r={c.Rank} alpha={c.Alpha} on {peft.Plan().Count} layers ({c.Targets}); {peft.TrainableParametersSummary()}",
            VeraModel<LlamaForCausalLM> vera =>
                $"VeRA{(plan.Quantization is { } q ? $" over {q.Type}" : "")} r={vera.GetConfig("default").Rank} on {vera.Plan().Count} layers ({vera.GetConfig("default").Targets}); {vera.TrainableParametersSummary()}",
            IA3Model<LlamaForCausalLM> ia3 =>
                $"IA3 on {ia3.Plan().Count} layers ({ia3.GetConfig("default").Targets}; feed-forward {ia3.GetConfig("default").FeedForward?.ToString() ?? "none"}); {ia3.TrainableParametersSummary()}",
            PromptLearningModel prompt =>
                $"{prompt.PeftType} with {prompt.GetConfig(prompt.ActiveAdapter).NumVirtualTokens} virtual tokens; {prompt.TrainableParametersSummary()}",
            BottleneckModel<LlamaForCausalLM> bottleneck =>
                $"bottleneck adapters of width {bottleneck.BottleneckSize} at {bottleneck.Plan().Count} sublayers; {bottleneck.TrainableParametersSummary()}",
            SparseFineTuning sparse =>
                $"sparse fine-tuning of {sparse.Plan.Count(t => t.TrainableEntries > 0)} tensors ({sparse.Config.Targets}, score {sparse.Config.Score}); {sparse.TrainableParametersSummary()}",
            _ => adapted.GetType().Name,
        };
        if (adapted.CausalLM?.Model.LayerDrop is { } drop)
            text += Invariant($"; layer drop up to p={drop.Probabilities.Max()}");
        return text;
    }

    private static string LoRAVariant(string method, LoRAConfig c) => method switch
    {
        "lora-fa" => " + LoRA-FA",
        "delta-lora" => Invariant($" + Delta-LoRA (from step {c.DeltaLoRA!.StartStep}, λ={c.DeltaLoRA.UpdateRatio})"),
        _ => (c.UseDoRA ? " + DoRA" : "") + (c.UseRsLoRA ? " + rsLoRA" : ""),
    };

    /// <summary>--feedforward-modules, or down_proj when the targets include it (PEFT's Llama default), or none.</summary>
    private TargetModules? FeedForwardFor(ParseResult parse, TargetModules targets)
    {
        if (Given(parse, FeedForward))
            return string.IsNullOrWhiteSpace(parse.GetValue(FeedForward)) ? null : TargetModules.Parse(parse.GetValue(FeedForward)!);
        return targets.IsAllLinear || targets.Pattern != null || targets.Names.Contains("down_proj") ? TargetModules.List("down_proj") : null;
    }

    private IReadOnlyList<int>? ParseLayers(ParseResult parse)
    {
        if (parse.GetValue(LayersToTransform) is not { } text) return null;
        var layers = new List<int>();
        foreach (var item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
                throw new CliError($"--layers-to-transform {text}: '{item}' is not a layer index (give indices such as 0,1,2).");
            layers.Add(layer);
        }
        if (layers.Count == 0) throw new CliError("--layers-to-transform is empty: give layer indices such as 0,1,2, or leave it out to adapt every layer.");
        return layers;
    }

    /// <summary>
    /// Refuses VeRA on q_proj/k_proj of a llama2.c model before training rather than when saving: its shared projection
    /// cannot be reordered per layer into the Hugging Face row order adapter files use.
    /// </summary>
    private static IAdaptedModel CheckVeraRows(VeraModel<LlamaForCausalLM> vera, LlamaForCausalLM model)
    {
        if (!model.Config.RopeInterleaved) return vera;
        var rotary = vera.Plan().Select(l => l.Path).Where(p => p.EndsWith(".q_proj", StringComparison.Ordinal) || p.EndsWith(".k_proj", StringComparison.Ordinal)).ToList();
        if (rotary.Count == 0) return vera;
        vera.Dispose();
        throw new CliError($"--method vera adapts {rotary[0]}{(rotary.Count > 1 ? $" and {rotary.Count - 1} more q/k layers" : "")} of a llama2.c checkpoint, whose q/k rows are in interleaved RoPE order: VeRA's shared projection cannot be reordered per layer into the Hugging Face order adapter files use. Target other layers (--target-modules v_proj,o_proj,gate_proj,up_proj,down_proj) or train on the converted folder (peftgen convert).");
    }

    /// <summary>The session's tokenizer, loaded here too for the methods that need it while adapting (text init, calibration).</summary>
    private static Text.ITokenizer Tokenizer(FineTuneOptions options, LlamaForCausalLM model) =>
        PretrainedModel.LoadTokenizer(options.TokenizerPath ?? PretrainedModel.FindTokenizer(options.ModelPath!, model.Config.VocabSize), model.Config.VocabSize);

    /// <summary>Training batches for sparse fine-tuning's scores: the dataset as the session reads it, in its order.</summary>
    private static IBatchSource CalibrationBatchesFor(FineTuneOptions options, LlamaForCausalLM model)
    {
        var dataset = JsonlDataset.Load(options.DataPath, Tokenizer(options, model), options.Dataset);
        return dataset.CreateBatchSource(options.BatchSize, options.Dataset.MaxSequenceLength, options.Seed, options.Pack);
    }

    /// <summary>An <see cref="ArgumentException"/>'s message without the " (Parameter 'x')" .NET appends.</summary>
    internal static string WithoutParameterName(string message)
    {
        int at = message.LastIndexOf(" (Parameter '", StringComparison.Ordinal);
        return at >= 0 && message.EndsWith("')", StringComparison.Ordinal) ? message[..at] : message;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private static string Invariant(float value) => value.ToString(CultureInfo.InvariantCulture);
}
