namespace PeftGen;

/// <summary>
/// LoRA+: train each B matrix with a learning rate <see cref="Ratio"/> times that of A (Hayou et al. 2024 recommend 16).
/// The generator emits the ratio as a <c>LoRAPlusRatio</c> constant and sets <see cref="Training.TrainerOptions.LoRAPlusRatio"/>
/// for every trainer of an adapted model of the class (<see cref="Generated.IDeclaredTraining"/>).
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class LoRAPlusAttribute : Attribute
{
    /// <summary>Sets the B-to-A learning-rate ratio.</summary>
    /// <param name="ratio">The ratio λ; 16 is the paper's recommendation, 1 disables LoRA+.</param>
    public LoRAPlusAttribute(double ratio) => Ratio = ratio;

    /// <summary>The B-to-A learning-rate ratio.</summary>
    public double Ratio { get; }
}
