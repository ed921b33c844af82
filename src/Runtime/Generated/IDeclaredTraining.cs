using System.ComponentModel;
using PeftGen.Training;

namespace PeftGen.Generated;

/// <summary>
/// Trainer settings a model class declares with attributes: the LoRA+ ratio (<c>[LoRAPlus]</c>) and the layer-wise
/// learning-rate decay (<c>[LayerwiseLearningRate]</c>). The source generator implements it on the class; a
/// <see cref="Trainer"/> built on an adapted model of the class (and so a <see cref="FineTuneSession"/>) applies it to its
/// options, as the generated <c>CreateTrainer</c> always did, so no caller copies the values by hand.
/// </summary>
/// <remarks>Support for generated code (see the <see cref="LoRAAdapterLayers"/> remarks); declare the settings with the attributes instead.</remarks>
[EditorBrowsable(EditorBrowsableState.Never)]
public interface IDeclaredTraining
{
    /// <summary>The options with the declared settings in place of the given ones.</summary>
    /// <param name="options">The run's settings.</param>
    /// <returns>The settings the trainer uses.</returns>
    TrainerOptions ApplyTo(TrainerOptions options);
}
