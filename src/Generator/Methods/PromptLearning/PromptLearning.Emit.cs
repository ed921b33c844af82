using PeftGen.Generator.Emitting;
using PeftGen.Generator.Spec;
using static PeftGen.Generator.Emitting.Code;

namespace PeftGen.Generator.Methods;

/// <summary>
/// The prompt-learning members: the method's config, its parameter count, and on a Llama model (which prompt learning
/// needs, PEFT026) the runtime's <c>PromptLearningModel</c> with <c>PromptLearningAdapterFile</c>.
/// </summary>
internal abstract partial class PromptLearningMethod<TSpec>
{
    private const string PromptModel = "global::PeftGen.Methods.PromptLearning.PromptLearningModel";

    /// <summary>The generated config property: the config type's own name.</summary>
    private string Config => ConfigType.Substring(ConfigType.LastIndexOf('.') + 1);

    protected sealed override void WriteConfig(IndentedWriter w, TSpec prompt, CountPlan plan, GenerationSpec spec)
    {
        Members.OpenConfig(w, Description, Name, ConfigType)
         .Line("NumVirtualTokens = " + Int(prompt.VirtualTokens) + ",");
        WriteSettings(w, prompt);
        if (prompt.Seed != 0) w.Line("Seed = " + Int(prompt.Seed) + ",");
        w.Close(";").Line();
    }

    /// <summary>The config's settings of this method, between the token count and the seed.</summary>
    protected abstract void WriteSettings(IndentedWriter w, TSpec prompt);

    /// <summary>What the trainable parameters are, for the count's summary.</summary>
    protected abstract string Formula(TSpec prompt);

    /// <summary>Whether <c>ApplyAdapters</c> needs its tokenizer (a text initialisation).</summary>
    protected virtual bool NeedsTokenizer(TSpec prompt) => false;

    protected sealed override TrainerWiring Trainer(GenerationSpec spec, TSpec method) => new(PromptModel, "prompt")
    {
        Always = spec.Model.IsLlama,
        Summary = "the trainer built on <paramref name=\"prompt\"/>, whose parameters are exactly the prompt encoder's (the base model stays frozen),",
    };

    protected sealed override void WriteMembers(IndentedWriter w, TSpec prompt, CountPlan plan, GenerationSpec spec, TrainerWiring trainer)
    {
        Members.WriteTrainableCount(w, plan, Formula(prompt), "ApplyAdapters().ParameterCount(\"default\")");
        if (!spec.Model.IsLlama) return;
        Members.WriteApply(w, spec.Model, "Adds " + Description + " to this model with <see cref=\"" + Config + "\"/>; the model stays frozen and the returned"
                + " model trains only the virtual tokens' encoder.",
            PromptModel, "global::PeftGen.Text.ITokenizer? tokenizer = null", "global::PeftGen.Methods.PromptLearning.PromptLearningModel.Create(this, " + Config + ", tokenizer)",
            NeedsTokenizer(prompt)
                ? "tokenizer\">The tokenizer of <see cref=\"PromptTuningConfig\"/>'s InitText; required."
                : "tokenizer\">A tokenizer (needed only for a text initialisation); may be null.");
        Members.WriteCreateTrainer(w, spec, trainer);
        Members.WriteSave(w, Description + " adapter <paramref name=\"adapter\"/> of", "Hugging Face PEFT format (<see cref=\"global::PeftGen.Methods.PromptLearning.PromptLearningAdapterFile\"/>)",
            "the virtual tokens' embeddings as the encoder computes them, one tensor <c>prompt_embeddings</c>",
            PromptModel, "prompt", named: true, "global::PeftGen.Methods.PromptLearning.PromptLearningAdapterFile.Save(prompt, folder, adapter, baseModelNameOrPath)");
        Members.WriteLoad(w, "the " + Description + " adapter in <paramref name=\"folder\"/> onto this model as <paramref name=\"adapter\"/>, with the",
            "folder's <c>adapter_config.json</c>, active and frozen (PEFT's inference mode);", PromptModel, named: true,
            "global::PeftGen.Methods.PromptLearning.PromptLearningAdapterFile.LoadInto(this, folder, adapter)",
            "The config is invalid or describes another model, or the tensor is missing or misshapen.");
    }
}

internal sealed partial class PromptTuningMethod
{
    protected override void WriteSettings(IndentedWriter w, PromptTuningSpec prompt)
    {
        if (prompt.InitText == null) return;
        w.Line("Init = global::PeftGen.Methods.PromptLearning.PromptTuningInit.Text,")
         .Line("InitText = " + Quote(prompt.InitText) + ",");
    }

    protected override string Formula(PromptTuningSpec prompt) => "n · hidden";

    protected override bool NeedsTokenizer(PromptTuningSpec prompt) => prompt.InitText != null;
}

internal sealed partial class PrefixTuningMethod
{
    protected override void WriteSettings(IndentedWriter w, PrefixTuningSpec prefix)
    {
        if (prefix.Projection) w.Line("PrefixProjection = true,");
        if (prefix.EncoderHiddenSize != 0) w.Line("EncoderHiddenSize = " + Int(prefix.EncoderHiddenSize) + ",");
    }

    protected override string Formula(PrefixTuningSpec prefix) =>
        prefix.Projection ? "the embedding [n, kv_dim] and the projection MLP" : "layers · 2 · n · kv_dim";
}

internal sealed partial class PTuningMethod
{
    protected override void WriteSettings(IndentedWriter w, PTuningSpec ptuning)
    {
        if (ptuning.EncoderHiddenSize != 0) w.Line("EncoderHiddenSize = " + Int(ptuning.EncoderHiddenSize) + ",");
        if (ptuning.EncoderType.Value != 0) w.Line("EncoderType = " + Enum(ptuning.EncoderType) + ",");
    }

    protected override string Formula(PTuningSpec ptuning) => "the embedding [n, hidden] and the encoder MLP";
}
