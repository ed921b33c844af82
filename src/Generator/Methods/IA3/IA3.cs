using System.Linq;
using PeftGen.Generator.Parsing;
using PeftGen.Generator.Planning;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Methods;

/// <summary><c>[IA3]</c>; <paramref name="FeedForward"/> is resolved (PEFT's down_proj default applied), null for none.</summary>
internal sealed record IA3Spec(
    TargetSpec Targets,
    TargetSpec? FeedForward,
    EquatableArray<string> Exclude,
    bool InitWeights,
    int Seed) : MethodSpec
{
    public override MethodDefinition Definition => IA3Method.Instance;
}

/// <summary>
/// A layer (IA)³ adapts (the runtime's <c>IA3AdaptedLayer</c>): whether its vector scales the input (a feed-forward layer)
/// rather than the output, and its trainable parameters, one vector (in channels for feed-forward layers, else out).
/// </summary>
internal readonly record struct IA3Row(string Path, int InFeatures, int OutFeatures, bool FeedForward, long TrainableParameters) : IPlanRow;

/// <summary>(IA)³: learned per-channel scaling vectors on the targeted layers' outputs (inputs for feed-forward layers).</summary>
internal sealed partial class IA3Method() : MethodDefinition<IA3Spec, RowPlan<IA3Row>>("IA3", Companion.LayerwiseLearningRate)
{
    public static readonly IA3Method Instance = new();

    protected override IA3Spec Read(AttributeValues v)
    {
        var targets = TargetMatcher.Parse(v.String("Targets") ?? "k_proj,v_proj,down_proj");
        string? feedForward = v.String("FeedForward");
        // PEFT's Llama default, down_proj, wherever the targets may select it; an explicit "" means none.
        var resolved = feedForward == null
            ? (targets.Kind != TargetKind.List || targets.Names.Contains("down_proj") ? TargetMatcher.Parse("down_proj") : null)
            : feedForward.Trim().Length == 0 ? null : TargetMatcher.Parse(feedForward);
        return new IA3Spec(targets, resolved, TargetMatcher.SplitList(v.String("Exclude")), v.Bool("InitWeights", true), v.Int("Seed"));
    }

    protected override RowPlan<IA3Row> Plan(IA3Spec ia3, PlanContext context)
    {
        var layers = context.Select(ia3.Targets, ia3.Exclude, null);
        var feedForwardRegex = ia3.FeedForward is { Kind: TargetKind.Regex } regex ? TargetMatcher.ToRegex(regex.Text) : null;
        if (ia3.FeedForward is { Kind: TargetKind.Regex } && feedForwardRegex == null) layers = null;
        return new RowPlan<IA3Row>(layers?.Select(l =>
        {
            bool ff = ia3.FeedForward is { } f && (f.Kind == TargetKind.AllLinear
                || (f.Kind == TargetKind.List && f.Names.Any(n => TargetMatcher.MatchesName(l.Path, n)))
                || (feedForwardRegex != null && feedForwardRegex.IsMatch(l.Path)));
            return new IA3Row(l.Path, l.InFeatures!.Value, l.OutFeatures!.Value, ff, ff ? l.InFeatures!.Value : l.OutFeatures!.Value);
        }).ToEquatableArray());
    }
}
