using PeftGen.Generator.Emitting;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

// The emitting part of every method (generator only; *.Emit.cs files are not compiled into the analyzers).
internal abstract partial class MethodDefinition
{
    /// <summary>Writes the method's members into the model's partial class.</summary>
    public abstract void Emit(IndentedWriter w, GenerationSpec spec);
}

internal abstract partial class MethodDefinition<TSpec, TPlan>
{
    /// <summary>Every method's members in one order: its config, its companions' settings, then its own members.</summary>
    public sealed override void Emit(IndentedWriter w, GenerationSpec spec)
    {
        var method = (TSpec)spec.Model.Method;
        var plan = (TPlan)spec.Method;
        var trainer = Trainer(spec, method);
        WriteConfig(w, method, plan, spec);
        Members.WriteCompanions(w, spec, this, trainer);
        WriteMembers(w, method, plan, spec, trainer);
    }

    /// <summary>The method's config object(s), from its attribute(s).</summary>
    protected abstract void WriteConfig(IndentedWriter w, TSpec method, TPlan plan, GenerationSpec spec);

    /// <summary>How the generated <c>CreateTrainer</c> wires the method.</summary>
    protected abstract TrainerWiring Trainer(GenerationSpec spec, TSpec method);

    /// <summary>The rest: plan, <c>ApplyAdapters</c>, <c>CreateTrainer</c>, <c>SaveAdapter</c>/<c>LoadAdapter</c>, ….</summary>
    protected abstract void WriteMembers(IndentedWriter w, TSpec method, TPlan plan, GenerationSpec spec, TrainerWiring trainer);
}
