using System.Buffers;

namespace PeftGen.Text;

/// <summary>Whether two adjacent tokens merge, into which token, and how urgently (lower priority merges first).</summary>
internal delegate bool TryMergePair(int left, int right, out int merged, out double priority);

/// <summary>
/// The merge loop of BPE tokenizers: repeatedly merge the adjacent pair with the lowest priority (leftmost on ties)
/// until no pair merges. O(n log n): the symbols form a linked list and candidate pairs wait in a priority queue;
/// a merge bumps the version of both nodes, which marks every queued pair still referring to them as stale.
/// Hugging Face BPE ranks merges (lowest rank first); llama2.c scores pieces (highest score first = lowest −score).
/// </summary>
internal static class PairMerger
{
    public static int[] Merge(ReadOnlySpan<int> symbols, TryMergePair tryMerge)
    {
        int count = symbols.Length;
        if (count < 2) return symbols.ToArray();
        var token = symbols.ToArray();
        var next = ArrayPool<int>.Shared.Rent(count);
        var previous = ArrayPool<int>.Shared.Rent(count);
        var version = ArrayPool<int>.Shared.Rent(count);
        try
        {
            for (int i = 0; i < count; i++)
            {
                next[i] = i + 1 < count ? i + 1 : -1;
                previous[i] = i - 1;
                version[i] = 0;
            }

            var queue = new PriorityQueue<Candidate, (double Priority, int Left)>();
            for (int i = 0; i + 1 < count; i++) Offer(i, i + 1);

            int remaining = count;
            while (queue.TryDequeue(out var candidate, out _))
            {
                int left = candidate.Left, right = candidate.Right;
                if (version[left] != candidate.LeftVersion || version[right] != candidate.RightVersion) continue;

                // The left node takes the merged token; the right node leaves the list.
                token[left] = candidate.MergedId;
                version[left]++;
                version[right]++;
                remaining--;
                int after = next[right];
                next[left] = after;
                if (after >= 0)
                {
                    previous[after] = left;
                    Offer(left, after);
                }
                if (previous[left] >= 0) Offer(previous[left], left);
            }

            var result = new int[remaining];
            int at = 0;
            for (int node = 0; node >= 0; node = next[node]) result[at++] = token[node];
            return result;

            void Offer(int left, int right)
            {
                // Node indices keep text order, so the lower left index is the leftmost pair.
                if (tryMerge(token[left], token[right], out int merged, out double priority))
                    queue.Enqueue(new Candidate(left, right, merged, version[left], version[right]), (priority, left));
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(next);
            ArrayPool<int>.Shared.Return(previous);
            ArrayPool<int>.Shared.Return(version);
        }
    }

    /// <summary>A queued merge of two adjacent nodes; stale once either node's version has moved on.</summary>
    private readonly record struct Candidate(int Left, int Right, int MergedId, int LeftVersion, int RightVersion);
}
