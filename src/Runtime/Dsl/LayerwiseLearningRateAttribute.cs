namespace PeftGen;

/// <summary>
/// Layer-wise learning-rate decay for the PEFT method a model class declares: decoder layer i of L trains at
/// lr·γ^(L−1−i). The generator emits γ as a <c>LayerwiseLearningRateDecay</c> constant and sets
/// <see cref="Training.TrainerOptions.LayerwiseLearningRateDecay"/> for every trainer of an adapted model of the class
/// (<see cref="Generated.IDeclaredTraining"/>).
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class LayerwiseLearningRateAttribute : Attribute
{
    /// <summary>Sets the decay.</summary>
    /// <param name="decay">γ in (0, 1]; 1 disables the decay.</param>
    public LayerwiseLearningRateAttribute(double decay) => Decay = decay;

    /// <summary>The decay γ.</summary>
    public double Decay { get; }
}
