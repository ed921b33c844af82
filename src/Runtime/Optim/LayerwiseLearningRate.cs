using System.Globalization;
using System.Text.RegularExpressions;
using PeftGen.Tensors;

namespace PeftGen.Optim;

/// <summary>
/// Layer-wise learning-rate decay (LLRD, as in ULMFiT/ELECTRA fine-tuning): smaller steps near the input. With L
/// decoder layers and decay γ in (0, 1], parameters under <c>layers.i.</c> (their adapters included) train at
/// lr·γ^(L−1−i), the token embedding (<c>embed_tokens</c>, also when tied to the head) at lr·γ^L, and everything
/// else (the final norm, <c>lm_head</c>) at lr. Implemented as optimizer parameter groups, one per distinct rate.
/// </summary>
public static partial class LayerwiseLearningRate
{
    /// <summary>Throws <see cref="ArgumentException"/> unless 0 &lt; <paramref name="decay"/> ≤ 1.</summary>
    public static void Validate(float decay)
    {
        if (!(decay > 0f && decay <= 1f))
            throw new ArgumentException($"Layer-wise learning-rate decay must be in (0, 1] (got {decay}); 1 disables it.", nameof(decay));
    }

    /// <summary>The decoder layer a parameter path belongs to (the i of <c>layers.i.</c>), or null.</summary>
    public static int? LayerIndex(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var match = LayerPattern().Match(path);
        return match.Success ? int.Parse(match.Groups[1].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture) : null;
    }

    /// <summary>The number of decoder layers L: one more than the largest layer index among <paramref name="parameterPaths"/> (0 when none).</summary>
    public static int CountLayers(IEnumerable<string> parameterPaths)
    {
        ArgumentNullException.ThrowIfNull(parameterPaths);
        int count = 0;
        foreach (var path in parameterPaths)
            if (LayerIndex(path) is int i) count = Math.Max(count, i + 1);
        return count;
    }

    /// <summary>The learning-rate multiplier of the parameter at <paramref name="path"/>: γ^(L−1−i), γ^L or 1.</summary>
    public static float ScaleFor(string path, int layerCount, float decay)
    {
        Validate(decay);
        if (LayerIndex(path) is int i && i >= layerCount)
            throw new ArgumentException($"Parameter '{path}' is in layer {i}, but the model was counted with {layerCount} layers.", nameof(path));
        return ScaleFor(LayerIndex(path), IsEmbedding(path), layerCount, decay);
    }

    /// <summary>
    /// The learning-rate multiplier of a parameter of decoder layer <paramref name="layer"/> (null: outside the layers) of
    /// <paramref name="layerCount"/>: γ^(L−1−i) in a layer, γ^L for the token embedding, 1 elsewhere.
    /// </summary>
    public static float ScaleFor(int? layer, bool embedding, int layerCount, float decay) =>
        layer is int i ? (float)Math.Pow(decay, layerCount - 1 - i) : embedding ? (float)Math.Pow(decay, layerCount) : 1f;

    /// <summary>
    /// Parameter groups for <paramref name="parameters"/>: one group per distinct multiplier
    /// <c>baseScale(path) · ScaleFor(path)</c> (baseScale composes other rules, e.g. LoRA+'s ratio for B matrices), in
    /// the order each multiplier first appears; parameters keep their order within a group.
    /// </summary>
    /// <exception cref="ArgumentException">The decay is outside (0, 1], or it is below 1 and no parameter path names a decoder layer.</exception>
    public static IReadOnlyList<ParameterGroup> Groups(IEnumerable<(string Path, Tensor Tensor)> parameters, int layerCount, float decay,
        Func<string, float>? baseScale = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Validate(decay);
        if (layerCount < 1 && decay < 1f)
            throw new ArgumentException("Layer-wise learning-rate decay needs decoder layers, but no parameter path contains 'layers.<i>.'.", nameof(layerCount));
        return GroupByScale(parameters.Select(p => (p.Tensor, (baseScale?.Invoke(p.Path) ?? 1f) * ScaleFor(p.Path, layerCount, decay))));
    }

    /// <summary>
    /// One parameter group per distinct multiplier among <paramref name="parameters"/>, in the order each multiplier first
    /// appears; parameters keep their order within a group.
    /// </summary>
    public static IReadOnlyList<ParameterGroup> GroupByScale(IEnumerable<(Tensor Tensor, float Scale)> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var order = new List<float>();
        var members = new Dictionary<float, List<Tensor>>();
        foreach (var (tensor, scale) in parameters)
        {
            if (!members.TryGetValue(scale, out var list))
            {
                members[scale] = list = new List<Tensor>();
                order.Add(scale);
            }
            list.Add(tensor);
        }
        return order.Select(s => new ParameterGroup(members[s], s)).ToList();
    }

    /// <summary>Whether a parameter path is the token embedding's (<c>embed_tokens</c>): the path rule of modules that are not Llama models.</summary>
    internal static bool IsEmbedding(string path) =>
        path.StartsWith("embed_tokens.", StringComparison.Ordinal) || path.Contains(".embed_tokens.", StringComparison.Ordinal);

    [GeneratedRegex(@"(?:^|\.)layers\.(\d+)\.", RegexOptions.CultureInvariant)]
    private static partial Regex LayerPattern();
}
