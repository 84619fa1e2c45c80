//! Text helpers: word counting (the fake tokenizer), streaming pieces,
//! truncation and extraction of text from message contents.

use serde_json::Value;

/// The fake token count: number of whitespace-separated words.
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits `text` into streaming pieces, one per word with its leading
/// whitespace attached, so that concatenating the pieces gives `text` back.
/// `"echo: hi there"` → `["echo:", " hi", " there"]`.
pub(crate) fn word_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut prev_ws = true;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if ws && !prev_ws && i > start {
            pieces.push(&text[start..i]);
            start = i;
        }
        prev_ws = ws;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Splits `text` into pieces of at most `size` characters (on char
/// boundaries). Empty text gives no piece.
pub(crate) fn char_pieces(text: &str, size: usize) -> Vec<&str> {
    let size = size.max(1);
    let mut pieces = Vec::new();
    let mut start = 0;
    for (n, (i, _)) in text.char_indices().enumerate() {
        if n > 0 && n % size == 0 {
            pieces.push(&text[start..i]);
            start = i;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// The prefix of `text` that ends with its `max_words`-th word, or `None`
/// when `text` has no more than `max_words` words.
pub(crate) fn truncate_words(text: &str, max_words: u64) -> Option<&str> {
    if words(text) <= max_words {
        return None;
    }
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if ws && in_word {
            seen += 1;
            if seen == max_words {
                return Some(&text[..i]);
            }
        }
        in_word = !ws;
    }
    // Only reached for max_words == 0.
    Some("")
}

/// The text of a message `content`: a string, or an array of parts/blocks
/// whose `text` fields (and the contents of Anthropic `tool_result` blocks)
/// are joined with newlines. Images, tool uses and other parts give no text.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let texts: Vec<String> = parts
                .iter()
                .filter_map(|part| {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        Some(t.to_owned())
                    } else if part.get("type").and_then(Value::as_str) == Some("tool_result") {
                        part.get("content").map(content_text)
                    } else {
                        None
                    }
                })
                .collect();
            texts.join("\n")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_words() {
        assert_eq!(words(""), 0);
        assert_eq!(words("  a  b\nc "), 3);
    }

    #[test]
    fn word_pieces_reassemble() {
        for t in [
            "echo: hi there",
            "  lead",
            "trail  ",
            "",
            "one",
            "a\n\nb é c",
        ] {
            let p = word_pieces(t);
            assert_eq!(p.concat(), t);
        }
        assert_eq!(
            word_pieces("echo: hi there"),
            vec!["echo:", " hi", " there"]
        );
    }

    #[test]
    fn char_pieces_reassemble() {
        let t = r#"{"city":"Zürich","n":12345678901234}"#;
        let p = char_pieces(t, 8);
        assert_eq!(p.concat(), t);
        assert!(p.len() > 3);
        assert!(char_pieces("", 8).is_empty());
    }

    #[test]
    fn truncates_on_word_boundaries() {
        assert_eq!(truncate_words("a b c", 3), None);
        assert_eq!(truncate_words("a b c", 2), Some("a b"));
        assert_eq!(truncate_words("  a   b c", 1), Some("  a"));
        assert_eq!(truncate_words("a b", 0), Some(""));
    }

    #[test]
    fn extracts_text_from_parts_and_tool_results() {
        assert_eq!(content_text(&json!("hi")), "hi");
        let parts = json!([
            {"type": "text", "text": "one"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "two"}]},
            {"type": "tool_result", "tool_use_id": "u", "content": "three"}
        ]);
        assert_eq!(content_text(&parts), "one\ntwo\nthree");
        assert_eq!(content_text(&json!(null)), "");
    }
}
