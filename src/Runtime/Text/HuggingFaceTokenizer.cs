using System.Buffers;
using System.Text;
using System.Text.Json;

namespace PeftGen.Text;

/// <summary>
/// A BPE tokenizer loaded from a Hugging Face <c>tokenizer.json</c> (and the <c>tokenizer_config.json</c> beside it,
/// when present), producing the ids the <c>tokenizers</c> library produces for the two BPE families in use:
/// byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM) and SentencePiece-style BPE with byte fallback (Llama 2,
/// TinyLlama, Mistral).
/// </summary>
/// <remarks>
/// <para>
/// Encoding follows the library's pipeline: added tokens (such as <c>&lt;|im_start|&gt;</c> or <c>&lt;s&gt;</c>) are
/// found first, longest match at the leftmost position, and never split; each stretch of text between them goes
/// through the normalizer (Prepend, Replace, NFC, ...), the pre-tokenizer (ByteLevel, Split with the file's regex,
/// Digits, Metaspace) and the BPE model (lowest merge rank first; <c>byte_fallback</c>, <c>unk_token</c>,
/// <c>fuse_unk</c>, <c>ignore_merges</c>). Added tokens are matched on the raw text, whatever their
/// <c>normalized</c> flag says; <c>lstrip</c>, <c>rstrip</c> and <c>single_word</c> are honoured.
/// </para>
/// <para>
/// As in the library, a SentencePiece-style file with the legacy Prepend("▁") normalizer puts "▁" before every
/// stretch of text, including one that follows an added token; Metaspace with <c>prepend_scheme: "first"</c> puts it
/// only at the start of the input. The decoder chain (ByteLevel, or Replace/ByteFallback/Fuse/Strip, or Metaspace)
/// removes that leading "▁" again, so <c>Decode(Encode(s)) == s</c> for any text without added tokens.
/// </para>
/// <para>Instances are safe to use from several threads; the per-word cache is concurrent.</para>
/// </remarks>
public sealed class HuggingFaceTokenizer : ITokenizer
{
    /// <summary>Real tokenizer files nest fewer than ten levels; a deeper document is refused before it is built.</summary>
    private const int MaxJsonDepth = 64;

    private static readonly string[] BosCandidates = ["<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", "<|endoftext|>"];
    private static readonly string[] EosCandidates = ["</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<eos>"];

    private readonly string?[] _tokens;
    private readonly bool[] _special;
    private readonly Dictionary<string, int> _ids;
    private readonly BpeModel _model;
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly TokenDecoder? _decoder;
    private readonly Dictionary<char, AddedToken[]> _addedByFirstChar;
    private readonly SearchValues<char> _addedFirstChars;

    private HuggingFaceTokenizer(string path, string?[] tokens, bool[] special, Dictionary<string, int> ids, BpeModel model,
        Normalizer? normalizer, PreTokenizer? preTokenizer, TokenDecoder? decoder, List<AddedToken> added)
    {
        FilePath = path;
        _tokens = tokens;
        _special = special;
        _ids = ids;
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _decoder = decoder;
        // Longest first, so the first candidate that matches at a position is the longest one.
        _addedByFirstChar = added.Where(t => t.Content.Length > 0)
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
        _addedFirstChars = SearchValues.Create([.. _addedByFirstChar.Keys]);
        BosToken = EosToken = "";
    }

    /// <summary>The <c>tokenizer.json</c> this tokenizer was loaded from.</summary>
    public string FilePath { get; }

    /// <inheritdoc />
    public int VocabSize => _tokens.Length;

    /// <inheritdoc />
    public int BosId { get; private set; }

    /// <inheritdoc />
    public int EosId { get; private set; }

    /// <summary>
    /// The beginning-of-sequence token: <c>bos_token</c> of <c>tokenizer_config.json</c>, else the first of
    /// &lt;s&gt;, &lt;|begin_of_text|&gt;, &lt;|startoftext|&gt;, &lt;bos&gt;, &lt;|endoftext|&gt; in the vocabulary, else
    /// <see cref="EosToken"/> (GPT-2 and Qwen2 have no separate BOS).
    /// </summary>
    public string BosToken { get; private set; }

    /// <summary>
    /// The end-of-sequence token: <c>eos_token</c> of <c>tokenizer_config.json</c>, else the first of &lt;/s&gt;,
    /// &lt;|end_of_text|&gt;, &lt;|endoftext|&gt;, &lt;|im_end|&gt;, &lt;|eot_id|&gt;, &lt;eos&gt; in the vocabulary.
    /// </summary>
    public string EosToken { get; private set; }

    /// <summary>
    /// Whether the model expects BOS first: <c>add_bos_token</c> of <c>tokenizer_config.json</c>, else whether the
    /// file's TemplateProcessing post-processor starts with the BOS token.
    /// </summary>
    public bool AddBosToken { get; private set; }

    /// <summary>
    /// Whether the model expects EOS last: <c>add_eos_token</c> of <c>tokenizer_config.json</c>, else whether the
    /// file's TemplateProcessing post-processor ends with the EOS token.
    /// </summary>
    public bool AddEosToken { get; private set; }

    /// <summary>
    /// The raw Jinja <c>chat_template</c> of <c>tokenizer_config.json</c> (the one named "default" when it lists
    /// several), or of a <c>chat_template.jinja</c> beside it; null when there is none.
    /// </summary>
    public string? ChatTemplate { get; private set; }

    /// <summary>The <see cref="ChatFormat"/> name recognised in <see cref="ChatTemplate"/>, or null.</summary>
    public string? ChatFormatName => ChatTemplate is null ? null : ChatFormat.Detect(ChatTemplate)?.Name;

    /// <summary>
    /// Loads a tokenizer from a <c>tokenizer.json</c> path, or from a directory holding one; a
    /// <c>tokenizer_config.json</c> in the same directory supplies BOS/EOS, their defaults and the chat template.
    /// </summary>
    /// <param name="path">The <c>tokenizer.json</c> file or its directory.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="InvalidDataException">
    /// A file is not JSON, nests too deeply, lacks a key, references unknown tokens, or describes a model other than
    /// BPE; the message names the file and the JSON path.
    /// </exception>
    public static HuggingFaceTokenizer Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string file = Directory.Exists(path) ? Path.Combine(path, "tokenizer.json") : path;
        if (!File.Exists(file))
        {
            throw new FileNotFoundException($"Tokenizer file '{file}' does not exist.", file);
        }

        HuggingFaceTokenizer tokenizer;
        using (var document = ParseJson(file))
        {
            tokenizer = Read(file, document.RootElement, out var postProcessor);
            string directory = Path.GetDirectoryName(Path.GetFullPath(file))!;
            string configFile = Path.Combine(directory, "tokenizer_config.json");
            if (File.Exists(configFile))
            {
                using var config = ParseJson(configFile);
                tokenizer.ApplyConfig(configFile, config.RootElement, postProcessor);
            }
            else
            {
                tokenizer.ApplyConfig(configFile, default, postProcessor);
            }
            string templateFile = Path.Combine(directory, "chat_template.jinja");
            if (tokenizer.ChatTemplate is null && File.Exists(templateFile))
            {
                tokenizer.ChatTemplate = File.ReadAllText(templateFile);
            }
        }
        return tokenizer;
    }

    /// <summary>Finds the id of a token string (vocabulary or added token), exact ordinal match.</summary>
    /// <param name="token">The token as written in <c>tokenizer.json</c>, e.g. "Ġthe" or "&lt;|im_end|&gt;".</param>
    /// <param name="id">The id when found; otherwise -1.</param>
    /// <returns>Whether the token exists.</returns>
    public bool TryGetId(string token, out int id)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_ids.TryGetValue(token, out id))
        {
            return true;
        }
        id = -1;
        return false;
    }

    /// <summary>The token string of an id as written in <c>tokenizer.json</c>, or null for an id no token has.</summary>
    /// <param name="id">The token id.</param>
    /// <returns>The token string or null.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="id"/> is outside the vocabulary.</exception>
    public string? GetToken(int id)
    {
        ValidateId(id, nameof(id));
        return _tokens[id];
    }

    /// <summary>Whether an id is an added token marked <c>"special": true</c>.</summary>
    /// <param name="id">The token id.</param>
    /// <returns>Whether it is special.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="id"/> is outside the vocabulary.</exception>
    public bool IsSpecial(int id)
    {
        ValidateId(id, nameof(id));
        return _special[id];
    }

    /// <inheritdoc />
    /// <exception cref="InvalidOperationException">
    /// A character of <paramref name="text"/> has no token, the vocabulary has no byte-fallback tokens and the model no unk_token.
    /// </exception>
    public int[] Encode(string text, bool addBos = true, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        ValidateUtf16(text);

        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos)
        {
            ids.Add(BosId);
        }
        var pieces = new List<PreToken>();
        int segmentStart = 0;
        int position = 0;
        while (position < text.Length)
        {
            int found = _addedByFirstChar.Count == 0 ? -1 : text.AsSpan(position).IndexOfAny(_addedFirstChars);
            if (found < 0)
            {
                break;
            }
            position += found;
            var match = MatchAddedToken(text, position);
            if (match is null)
            {
                position++;
                continue;
            }

            int start = position, end = position + match.Content.Length;
            while (match.LStrip && start > segmentStart && char.IsWhiteSpace(text[start - 1]))
            {
                start--;
            }
            while (match.RStrip && end < text.Length && char.IsWhiteSpace(text[end]))
            {
                end++;
            }
            EncodeText(text, segmentStart, start - segmentStart, pieces, ids);
            ids.Add(match.Id);
            position = segmentStart = end;
        }
        EncodeText(text, segmentStart, text.Length - segmentStart, pieces, ids);

        if (addEos)
        {
            ids.Add(EosId);
        }
        return [.. ids];
    }

    /// <inheritdoc />
    /// <remarks>
    /// Token strings go through the file's decoder chain as in the <c>tokenizers</c> library, added tokens
    /// included; a leading BOS is skipped (the decoder chain drops the dummy-prefix space). Ids that no token has
    /// are skipped, as the library does.
    /// </remarks>
    public string Decode(ReadOnlySpan<int> ids) => Decode(ids, skipSpecialTokens: false);

    /// <summary>Decodes token ids, optionally leaving out every special added token (BOS, EOS, chat markers).</summary>
    /// <param name="ids">The token ids.</param>
    /// <param name="skipSpecialTokens">Whether to leave out special tokens anywhere in the sequence.</param>
    /// <returns>The decoded text; invalid UTF-8 becomes U+FFFD.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An id is negative or not below <see cref="VocabSize"/>.</exception>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens)
    {
        var tokens = new List<string>(ids.Length);
        for (int i = 0; i < ids.Length; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), id,
                    $"Token id {id} at index {i} is outside the vocabulary of {VocabSize} tokens.");
            }
            if ((i == 0 && id == BosId) || (skipSpecialTokens && _special[id]) || _tokens[id] is not string token)
            {
                continue;
            }
            tokens.Add(token);
        }
        // Without a decoder the library joins token strings with spaces.
        return _decoder is null ? string.Join(' ', tokens) : string.Concat(_decoder.Decode(tokens));
    }

    private void EncodeText(string text, int start, int length, List<PreToken> pieces, List<int> ids)
    {
        if (length == 0)
        {
            return;
        }
        string segment = text.Substring(start, length);
        if (_normalizer is not null)
        {
            segment = _normalizer.Normalize(segment);
        }
        pieces.Clear();
        pieces.Add(new PreToken(segment, AtTextStart: start == 0));
        _preTokenizer?.PreTokenize(pieces);
        foreach (var piece in pieces)
        {
            _model.EncodeWord(piece.Text, ids);
        }
    }

    private AddedToken? MatchAddedToken(string text, int position)
    {
        if (!_addedByFirstChar.TryGetValue(text[position], out var candidates))
        {
            return null;
        }
        foreach (var candidate in candidates)
        {
            if (!text.AsSpan(position).StartsWith(candidate.Content, StringComparison.Ordinal))
            {
                continue;
            }
            int end = position + candidate.Content.Length;
            // single_word: no word character may touch the match on either side.
            if (candidate.SingleWord && ((position > 0 && IsWordChar(text[position - 1])) || (end < text.Length && IsWordChar(text[end]))))
            {
                continue;
            }
            return candidate;
        }
        return null;

        static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
    }

    private static void ValidateUtf16(string text)
    {
        int at = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        while (at >= 0 && at < text.Length)
        {
            if (char.IsHighSurrogate(text[at]) && at + 1 < text.Length && char.IsLowSurrogate(text[at + 1]))
            {
                at += 2;
            }
            else if (char.IsSurrogate(text[at]))
            {
                throw new ArgumentException($"The text has an unpaired surrogate at index {at}, so it has no UTF-8 form.", nameof(text));
            }
            else
            {
                at++;
            }
            int next = text.AsSpan(at).IndexOfAnyInRange('\uD800', '\uDFFF');
            at = next < 0 ? -1 : at + next;
        }
    }

    private void ValidateId(int id, string paramName)
    {
        if ((uint)id >= (uint)VocabSize)
        {
            throw new ArgumentOutOfRangeException(paramName, id, $"Token id {id} is outside the vocabulary of {VocabSize} tokens.");
        }
    }

    private static JsonDocument ParseJson(string file)
    {
        try
        {
            byte[] bytes = File.ReadAllBytes(file);
            // JsonDocument checks the UTF-8 of strings only when they are read (then throws InvalidOperationException).
            if (!System.Text.Unicode.Utf8.IsValid(bytes))
            {
                throw new InvalidDataException($"Tokenizer file '{file}' is not valid UTF-8 text.");
            }
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = MaxJsonDepth });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Tokenizer file '{file}' is not valid JSON (or nests deeper than {MaxJsonDepth} levels): {e.Message}", e);
        }
    }

    private static HuggingFaceTokenizer Read(string file, JsonElement root, out JsonElement postProcessor)
    {
        var reader = new PipelineReader(file);
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw reader.Invalid("$", $"is a JSON {root.ValueKind}; a tokenizer.json is an object with a \"model\" key");
        }
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            throw reader.Invalid("$.model", "is missing or not an object; a tokenizer.json needs a \"model\" with \"type\": \"BPE\", \"vocab\" and \"merges\"");
        }
        string type = model.TryGetProperty("type", out var typeElement) && typeElement.ValueKind == JsonValueKind.String
            ? typeElement.GetString()!
            : model.TryGetProperty("merges", out _) ? "BPE" : "(missing)";
        if (type != "BPE")
        {
            throw reader.Invalid("$.model.type", $"is '{type}'; only BPE models are supported (byte-level BPE as in GPT-2, Llama 3 and Qwen2, or SentencePiece-style BPE with byte_fallback as in Llama 2 and Mistral), not WordPiece, WordLevel or Unigram");
        }
        RejectUnsupported(reader, model);

        var vocab = ReadVocab(reader, model);
        var merges = ReadMerges(reader, model, vocab);
        int unkId = -1;
        if (model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String && !vocab.TryGetValue(unk.GetString()!, out unkId))
        {
            throw reader.Invalid("$.model.unk_token", $"is \"{unk.GetString()}\", which is not in model.vocab");
        }

        var added = ReadAddedTokens(reader, root);
        long largest = -1;
        string largestAt = "$.model.vocab";
        foreach (int id in vocab.Values)
        {
            largest = Math.Max(largest, id);
        }
        for (int i = 0; i < added.Count; i++)
        {
            if (added[i].Id > largest)
            {
                (largest, largestAt) = (added[i].Id, $"$.added_tokens[{i}].id");
            }
        }
        // The id table has one slot per id up to the largest: a corrupt id (e.g. 2000000000) must not allocate gigabytes.
        long entries = (long)vocab.Count + added.Count;
        if (largest + 1 > entries + MaxUnusedIds)
        {
            throw reader.Invalid(largestAt, $"is {largest}, which leaves more than {MaxUnusedIds} of the ids below it unused ({entries} tokens)");
        }
        int size = (int)(largest + 1);
        var tokens = new string?[size];
        var special = new bool[size];
        var ids = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        foreach (var (token, id) in vocab)
        {
            tokens[id] = token;
        }
        foreach (var token in added)
        {
            tokens[token.Id] = token.Content;
            special[token.Id] = token.Special;
            ids[token.Content] = token.Id;
        }

        var bpe = new BpeModel(vocab, merges, unkId,
            reader.OptionalBool(model, "fuse_unk", false, "$.model"),
            reader.OptionalBool(model, "byte_fallback", false, "$.model"),
            reader.OptionalBool(model, "ignore_merges", false, "$.model"));
        postProcessor = root.TryGetProperty("post_processor", out var post) ? post.Clone() : default;
        return new HuggingFaceTokenizer(file, tokens, special, ids, bpe,
            root.TryGetProperty("normalizer", out var normalizer) ? reader.ReadNormalizer(normalizer, "$.normalizer") : null,
            root.TryGetProperty("pre_tokenizer", out var preTokenizer) ? reader.ReadPreTokenizer(preTokenizer, "$.pre_tokenizer") : null,
            root.TryGetProperty("decoder", out var decoder) ? reader.ReadDecoder(decoder, "$.decoder") : null,
            added);
    }

    /// <summary>Options that change which ids come out and that this loader does not implement are refused, not ignored.</summary>
    private static void RejectUnsupported(PipelineReader reader, JsonElement model)
    {
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
        {
            throw reader.Invalid("$.model.dropout", "is set; BPE dropout is not supported, set it to null");
        }
        foreach (string key in (string[])["continuing_subword_prefix", "end_of_word_suffix"])
        {
            if (model.TryGetProperty(key, out var value) && value.ValueKind == JsonValueKind.String && value.GetString()!.Length > 0)
            {
                throw reader.Invalid($"$.model.{key}", "is set; subword prefixes and suffixes are not supported, set it to null");
            }
        }
    }

    private static Dictionary<string, int> ReadVocab(PipelineReader reader, JsonElement model)
    {
        if (!model.TryGetProperty("vocab", out var vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
        {
            throw reader.Invalid("$.model.vocab", "is missing or not an object mapping token strings to ids");
        }
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var seen = new HashSet<int>();
        foreach (var entry in vocabElement.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
            {
                throw reader.Invalid($"$.model.vocab[\"{entry.Name}\"]", "is not a non-negative integer id");
            }
            if (!seen.Add(id))
            {
                throw reader.Invalid($"$.model.vocab[\"{entry.Name}\"]", $"repeats id {id}, which another token already has");
            }
            vocab[entry.Name] = id;
        }
        return vocab;
    }

    private static Dictionary<long, (int Rank, int MergedId)> ReadMerges(PipelineReader reader, JsonElement model, Dictionary<string, int> vocab)
    {
        if (!model.TryGetProperty("merges", out var mergesElement) || mergesElement.ValueKind != JsonValueKind.Array)
        {
            throw reader.Invalid("$.model.merges", "is missing or not an array of merges (\"left right\" strings or [\"left\", \"right\"] pairs)");
        }
        var merges = new Dictionary<long, (int Rank, int MergedId)>(mergesElement.GetArrayLength());
        int rank = 0;
        foreach (var merge in mergesElement.EnumerateArray())
        {
            string at = $"$.model.merges[{rank}]";
            string left, right;
            if (merge.ValueKind == JsonValueKind.String && merge.GetString()!.Split(' ') is [var a, var b])
            {
                (left, right) = (a, b);
            }
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String)
            {
                (left, right) = (merge[0].GetString()!, merge[1].GetString()!);
            }
            else
            {
                throw reader.Invalid(at, "is neither a \"left right\" string with one space nor a [\"left\", \"right\"] pair");
            }
            int leftId = LookUp(left), rightId = LookUp(right), mergedId = LookUp(left + right);
            // The first listing of a pair keeps its (lower) rank.
            merges.TryAdd(BpeModel.PairKey(leftId, rightId), (rank, mergedId));
            rank++;

            int LookUp(string token) => vocab.TryGetValue(token, out int id)
                ? id
                : throw reader.Invalid(at, $"merges \"{left}\" + \"{right}\" but \"{token}\" is not in model.vocab");
        }
        return merges;
    }

    /// <summary>Most ids below the largest id that may have no token (real tokenizers have none or a few).</summary>
    private const int MaxUnusedIds = 1 << 20;

    private static List<AddedToken> ReadAddedTokens(PipelineReader reader, JsonElement root)
    {
        var added = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens", out var array) || array.ValueKind == JsonValueKind.Null)
        {
            return added;
        }
        if (array.ValueKind != JsonValueKind.Array)
        {
            throw reader.Invalid("$.added_tokens", "is not an array");
        }
        int index = 0;
        foreach (var token in array.EnumerateArray())
        {
            string at = $"$.added_tokens[{index++}]";
            if (token.ValueKind != JsonValueKind.Object)
            {
                throw reader.Invalid(at, "is not an object");
            }
            if (!token.TryGetProperty("id", out var idElement) || idElement.ValueKind != JsonValueKind.Number
                || !idElement.TryGetInt32(out int id) || id < 0)
            {
                throw reader.Invalid($"{at}.id", "is missing or not a non-negative integer");
            }
            string content = reader.RequireString(token, "content", at);
            if (content.Length == 0)
            {
                throw reader.Invalid($"{at}.content", "is empty");
            }
            added.Add(new AddedToken(id, content,
                reader.OptionalBool(token, "special", false, at),
                reader.OptionalBool(token, "lstrip", false, at),
                reader.OptionalBool(token, "rstrip", false, at),
                reader.OptionalBool(token, "single_word", false, at)));
        }
        return added;
    }

    /// <summary>Sets BOS/EOS, their defaults and the chat template from <c>tokenizer_config.json</c> (undefined element when absent).</summary>
    private void ApplyConfig(string configFile, JsonElement config, JsonElement postProcessor)
    {
        bool hasConfig = config.ValueKind != JsonValueKind.Undefined;
        if (hasConfig && config.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"Tokenizer config '{configFile}' is a JSON {config.ValueKind}, not an object.");
        }

        string? eos = hasConfig ? ReadConfigToken(configFile, config, "eos_token") : null;
        eos ??= EosCandidates.FirstOrDefault(_ids.ContainsKey)
            ?? throw new InvalidDataException(
                $"Tokenizer file '{FilePath}' has none of {string.Join(", ", EosCandidates)} and no tokenizer_config.json beside it names an eos_token; add one with \"eos_token\".");
        string bos = (hasConfig ? ReadConfigToken(configFile, config, "bos_token") : null)
            ?? BosCandidates.FirstOrDefault(_ids.ContainsKey) ?? eos;
        (BosToken, BosId) = (bos, _ids[bos]);
        (EosToken, EosId) = (eos, _ids[eos]);

        var template = FindTemplateItems(postProcessor);
        AddBosToken = (hasConfig ? ReadConfigBool(configFile, config, "add_bos_token") : null)
            ?? (template.Count > 0 && template[0] == bos);
        AddEosToken = (hasConfig ? ReadConfigBool(configFile, config, "add_eos_token") : null)
            ?? (template.Count > 0 && template[^1] == eos);
        if (hasConfig)
        {
            ChatTemplate = ReadChatTemplate(configFile, config);
        }
    }

    /// <summary>A special-token entry of the config: a string, a <c>{"content": …}</c> object, or null/absent.</summary>
    private string? ReadConfigToken(string configFile, JsonElement config, string key)
    {
        if (!config.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        string? token = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String => content.GetString(),
            _ => throw new InvalidDataException($"Tokenizer config '{configFile}': {key} is neither a string nor an object with a \"content\" string."),
        };
        return _ids.ContainsKey(token!)
            ? token
            : throw new InvalidDataException($"Tokenizer config '{configFile}': {key} is \"{token}\", which is not a token of '{FilePath}'.");
    }

    private static bool? ReadConfigBool(string configFile, JsonElement config, string key)
    {
        if (!config.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"Tokenizer config '{configFile}': {key} is a JSON {value.ValueKind}, not true or false."),
        };
    }

    private static string? ReadChatTemplate(string configFile, JsonElement config)
    {
        if (!config.TryGetProperty("chat_template", out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        if (value.ValueKind == JsonValueKind.String)
        {
            return value.GetString();
        }
        if (value.ValueKind == JsonValueKind.Array)
        {
            // Several named templates: the one called "default", else the first.
            var named = value.EnumerateArray()
                .Where(e => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("template", out var t) && t.ValueKind == JsonValueKind.String)
                .ToList();
            var chosen = named.FirstOrDefault(e => e.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String && n.GetString() == "default");
            if (chosen.ValueKind == JsonValueKind.Undefined && named.Count > 0)
            {
                chosen = named[0];
            }
            if (chosen.ValueKind == JsonValueKind.Object)
            {
                return chosen.GetProperty("template").GetString();
            }
        }
        throw new InvalidDataException($"Tokenizer config '{configFile}': chat_template is neither a string nor a list of {{\"name\", \"template\"}} objects.");
    }

    /// <summary>
    /// The token strings of the single-sequence template of a TemplateProcessing post-processor (found directly or
    /// inside a Sequence), with "$A" for the text; empty when there is none. Only used for the BOS/EOS defaults.
    /// </summary>
    private static List<string> FindTemplateItems(JsonElement postProcessor)
    {
        var items = new List<string>();
        if (postProcessor.ValueKind != JsonValueKind.Object || !postProcessor.TryGetProperty("type", out var type))
        {
            return items;
        }
        if (type.ValueKind == JsonValueKind.String && type.GetString() == "Sequence"
            && postProcessor.TryGetProperty("processors", out var processors) && processors.ValueKind == JsonValueKind.Array)
        {
            foreach (var processor in processors.EnumerateArray())
            {
                items = FindTemplateItems(processor);
                if (items.Count > 0)
                {
                    return items;
                }
            }
            return items;
        }
        if (type.ValueKind != JsonValueKind.String || type.GetString() != "TemplateProcessing"
            || !postProcessor.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array)
        {
            return items;
        }
        foreach (var item in single.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("SpecialToken", out var special)
                && special.ValueKind == JsonValueKind.Object && special.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String)
            {
                items.Add(id.GetString()!);
            }
            else
            {
                items.Add("$A");
            }
        }
        return items;
    }

    /// <summary>An entry of <c>added_tokens</c>.</summary>
    private sealed record AddedToken(int Id, string Content, bool Special, bool LStrip, bool RStrip, bool SingleWord);
}
