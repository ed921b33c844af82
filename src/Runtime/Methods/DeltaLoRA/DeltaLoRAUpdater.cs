using PeftGen.Backends;
using PeftGen.Methods.LoRA;
using PeftGen.Nn;
using PeftGen.Optim;
using PeftGen.Tensors;

namespace PeftGen.Methods.DeltaLoRA;

/// <summary>
/// Applies Delta-LoRA's base update after each optimizer step: for every layer of the adapter, once more than
/// <see cref="DeltaLoRAOptions.StartStep"/> steps were taken, W ← W + λ·s·(B⁽ᵗ⁺¹⁾A⁽ᵗ⁺¹⁾ − B⁽ᵗ⁾A⁽ᵗ⁾), as two rank-r
/// GEMMs straight into W (no [out, in] temporary). W gets no gradient and no optimizer state; the updater keeps
/// B⁽ᵗ⁾, A⁽ᵗ⁾ (r·(in + out) floats per layer) and the factors at the first update, because the updates telescope:
/// the total base change is ΔW = λ·s·(B·A − B_K·A_K), a rank-2r matrix that <see cref="BaseDelta"/> returns in factored
/// form for saving. A trainer built on the <see cref="PeftModel{TModel}"/> runs one (<see cref="PeftModel{TModel}.PrepareTraining"/>
/// creates it); one created here is added to a trainer's <c>AfterStepHooks</c>.
/// </summary>
public sealed class DeltaLoRAUpdater : IAfterStepHook, IDisposable
{
    private readonly List<LayerState> _layers;

    private DeltaLoRAUpdater(string adapter, DeltaLoRAOptions options, List<LayerState> layers)
    {
        Adapter = adapter;
        Options = options;
        _layers = layers;
    }

    /// <summary>The adapter whose layers this updater moves.</summary>
    public string Adapter { get; }

    /// <summary>λ and K.</summary>
    public DeltaLoRAOptions Options { get; }

    /// <summary>Base updates applied so far.</summary>
    public int UpdatesApplied { get; private set; }

    /// <summary>
    /// An updater for Delta-LoRA adapter <paramref name="adapter"/> of <paramref name="peft"/>; it snapshots A and B now,
    /// so create it before the first step.
    /// </summary>
    /// <exception cref="ArgumentException">The adapter has no <see cref="LoRAConfig.DeltaLoRA"/> settings or a base is not a float Linear.</exception>
    public static DeltaLoRAUpdater Create<TModel>(PeftModel<TModel> peft, string adapter = "default") where TModel : Module
    {
        ArgumentNullException.ThrowIfNull(peft);
        var config = peft.GetConfig(adapter);
        var options = config.DeltaLoRA
            ?? throw new ArgumentException($"Adapter '{adapter}' is plain LoRA: set LoRAConfig.DeltaLoRA to train it with Delta-LoRA.", nameof(adapter));
        var layers = new List<LayerState>();
        foreach (var (path, layer) in peft.LoRALayers)
        {
            if (!layer.AdapterNames.Contains(adapter)) continue;
            LoRAVariants.CheckBase(config, null, path, layer.BaseLayer);
            layers.Add(new LayerState(path, layer, adapter));
        }
        return new DeltaLoRAUpdater(adapter, options, layers);
    }

    /// <inheritdoc />
    public void AfterStep(int step)
    {
        foreach (var state in _layers)
        {
            if (step > Options.StartStep)
            {
                if (state.StartA == null) state.MarkStart();
                state.UpdateBase(Options.UpdateRatio);
            }
            state.Snapshot();
        }
        if (step > Options.StartStep) UpdatesApplied++;
    }

    /// <summary>
    /// The accumulated base change of every layer, factored: ΔW = DeltaB [out, 2r] · DeltaA [2r, in], where
    /// DeltaA = [A; A_K] and DeltaB = [λ·s·B, −λ·s·B_K]. Zero matrices before the first update.
    /// </summary>
    public IReadOnlyList<(string Path, float[] DeltaA, float[] DeltaB, int Rank)> BaseDelta()
    {
        var result = new List<(string, float[], float[], int)>();
        foreach (var s in _layers)
        {
            int r = s.Rank, inF = s.Layer.InFeatures, outF = s.Layer.OutFeatures;
            var da = new float[2 * r * inF];
            var db = new float[outF * 2 * r];
            if (s.StartA != null)
            {
                float f = Options.UpdateRatio * s.Layer.GetSettings(Adapter).Scaling;
                s.Layer.LoraA(Adapter).AsSpan().CopyTo(da);
                s.StartA.AsSpan().CopyTo(da.AsSpan(r * inF));
                var b = s.Layer.LoraB(Adapter).AsSpan();
                var bk = s.StartB!.AsSpan();
                for (int o = 0; o < outF; o++)
                    for (int k = 0; k < r; k++)
                    {
                        db[o * 2 * r + k] = f * b[o * r + k];
                        db[o * 2 * r + r + k] = -f * bk[o * r + k];
                    }
            }
            result.Add((s.Path, da, db, 2 * r));
        }
        return result;
    }

    /// <summary>Releases the snapshots (once; a trainer it was added to disposes it too).</summary>
    public void Dispose()
    {
        foreach (var s in _layers) s.Dispose();
        _layers.Clear();
    }

    private sealed class LayerState : IDisposable
    {
        public LayerState(string path, LoRALinear layer, string adapter)
        {
            Path = path;
            Layer = layer;
            Adapter = adapter;
            Weight = ((Linear)layer.BaseLayer).Weight;
            Rank = layer.GetSettings(adapter).Rank;
            PreviousA = Copy(layer.LoraA(adapter));
            PreviousB = Copy(layer.LoraB(adapter));
        }

        public string Path { get; }
        public LoRALinear Layer { get; }
        public string Adapter { get; }
        public Tensor Weight { get; }                 // [out, in], frozen
        public int Rank { get; }
        public Tensor PreviousA { get; }              // [r, in] = A⁽ᵗ⁾
        public Tensor PreviousB { get; }              // [out, r] = B⁽ᵗ⁾
        public Tensor? StartA { get; private set; }   // A_K
        public Tensor? StartB { get; private set; }   // B_K

        public void MarkStart()
        {
            StartA = Copy(PreviousA);
            StartB = Copy(PreviousB);
        }

        /// <summary>W += λ·s·B⁽ᵗ⁺¹⁾·A⁽ᵗ⁺¹⁾ − λ·s·B⁽ᵗ⁾·A⁽ᵗ⁾.</summary>
        public void UpdateBase(float ratio)
        {
            float f = ratio * Layer.GetSettings(Adapter).Scaling;
            int outF = Weight.Size(0), inF = Weight.Size(1);
            var a = Layer.LoraA(Adapter);
            var b = Layer.LoraB(Adapter);
            var be = Backend.Of(Weight);
            be.Gemm(false, false, outF, inF, Rank, f, b, Rank, 0, a, inF, 0, 1f, Weight, inF, 0, 1);
            be.Gemm(false, false, outF, inF, Rank, -f, PreviousB, Rank, 0, PreviousA, inF, 0, 1f, Weight, inF, 0, 1);
        }

        public void Snapshot()
        {
            PreviousA.CopyFrom(Layer.LoraA(Adapter));
            PreviousB.CopyFrom(Layer.LoraB(Adapter));
        }

        private static Tensor Copy(Tensor t) => Tensor.Create(t.ShapeArray, DType.Float32, zeroed: false, scoped: false).CopyFrom(t);

        public void Dispose()
        {
            PreviousA.Dispose();
            PreviousB.Dispose();
            StartA?.Dispose();
            StartB?.Dispose();
        }
    }
}
