using System;
using System.Collections.Generic;
using System.Globalization;
using PeftGen.Generator.Spec;

namespace PeftGen.Generator.Parsing;

/// <summary>
/// Reads the shape fields of a Hugging Face config.json. A small reader of its own keeps the generator free of
/// dependencies the compiler does not load for analyzers; it takes the top-level numbers and booleans and skips the rest.
/// </summary>
internal static class ModelConfigReader
{
    /// <summary>The config's shape fields, or null when the text is not a JSON object.</summary>
    public static ModelConfigSpec? Read(string path, string? json)
    {
        if (json == null) return null;
        var values = new Dictionary<string, object>(StringComparer.Ordinal);
        var reader = new Reader(json);
        if (!reader.TryReadTopLevel(values)) return null;
        return new ModelConfigSpec(
            path,
            Int("hidden_size"),
            Int("intermediate_size"),
            Int("num_attention_heads"),
            Int("num_key_value_heads"),
            Int("num_hidden_layers"),
            Int("vocab_size"),
            Int("head_dim"),
            values.TryGetValue("tie_word_embeddings", out var tie) && tie is true,
            Int("max_position_embeddings"));

        int? Int(string key) =>
            values.TryGetValue(key, out var v) && v is double d && d >= 1 && d <= int.MaxValue && d == Math.Floor(d) ? (int)d : null;
    }

    private ref struct Reader
    {
        private readonly string _text;
        private int _pos;

        public Reader(string text)
        {
            _text = text;
            _pos = 0;
        }

        public bool TryReadTopLevel(Dictionary<string, object> values)
        {
            SkipWhitespace();
            if (!Consume('{')) return false;
            SkipWhitespace();
            if (Consume('}')) return true;
            while (true)
            {
                SkipWhitespace();
                if (!TryReadString(out var key)) return false;
                SkipWhitespace();
                if (!Consume(':')) return false;
                SkipWhitespace();
                if (!TryReadValue(out var value)) return false;
                if (value != null) values[key] = value;
                SkipWhitespace();
                if (Consume(',')) continue;
                return Consume('}');
            }
        }

        // Returns numbers as double and booleans as bool; strings, null, objects and arrays are read past and give null.
        private bool TryReadValue(out object? value)
        {
            value = null;
            if (_pos >= _text.Length) return false;
            char c = _text[_pos];
            if (c == '"') return TryReadString(out _);
            if (c == '{' || c == '[') return TrySkipContainer();
            if (Literal("true")) { value = true; return true; }
            if (Literal("false")) { value = false; return true; }
            if (Literal("null")) return true;
            int start = _pos;
            while (_pos < _text.Length && "+-.eE0123456789".IndexOf(_text[_pos]) >= 0) _pos++;
            if (!double.TryParse(_text.Substring(start, _pos - start), NumberStyles.Float, CultureInfo.InvariantCulture, out var number)) return false;
            value = number;
            return true;
        }

        private bool TrySkipContainer()
        {
            int depth = 0;
            while (_pos < _text.Length)
            {
                char c = _text[_pos];
                if (c == '"')
                {
                    if (!TryReadString(out _)) return false;
                    continue;
                }
                _pos++;
                if (c == '{' || c == '[') depth++;
                else if ((c == '}' || c == ']') && --depth == 0) return true;
            }
            return false;
        }

        private bool TryReadString(out string result)
        {
            result = "";
            if (!Consume('"')) return false;
            var sb = new System.Text.StringBuilder();
            while (_pos < _text.Length)
            {
                char c = _text[_pos++];
                if (c == '"')
                {
                    result = sb.ToString();
                    return true;
                }
                if (c != '\\') sb.Append(c);
                else if (_pos < _text.Length)
                {
                    char e = _text[_pos++];
                    switch (e)
                    {
                        case 'n': sb.Append('\n'); break;
                        case 't': sb.Append('\t'); break;
                        case 'r': sb.Append('\r'); break;
                        case 'b': sb.Append('\b'); break;
                        case 'f': sb.Append('\f'); break;
                        case 'u' when _pos + 4 <= _text.Length
                            && int.TryParse(_text.Substring(_pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var code):
                            sb.Append((char)code);
                            _pos += 4;
                            break;
                        default: sb.Append(e); break;
                    }
                }
            }
            return false;
        }

        private bool Literal(string word)
        {
            if (string.CompareOrdinal(_text, _pos, word, 0, word.Length) != 0) return false;
            _pos += word.Length;
            return true;
        }

        private bool Consume(char c)
        {
            if (_pos >= _text.Length || _text[_pos] != c) return false;
            _pos++;
            return true;
        }

        private void SkipWhitespace()
        {
            while (_pos < _text.Length && char.IsWhiteSpace(_text[_pos])) _pos++;
        }
    }
}
