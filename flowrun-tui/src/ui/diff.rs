//! Word-level diff of the baseline and draft outputs, as styled lines for each pane: removed
//! words are marked in the baseline (red, crossed out), added words in the draft (green, bold,
//! underlined), so the change reads without colour too.

use std::time::Duration;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use similar::{ChangeTag, TextDiff};

/// Outputs longer than this (bytes, both sides together) are shown without a diff: diffing is
/// done on every frame and must stay cheap.
const MAX_DIFF_BYTES: usize = 32 * 1024;

/// A diff that takes longer than this falls back to a coarser one.
const DIFF_TIMEOUT: Duration = Duration::from_millis(5);

pub(super) fn removed() -> Style {
    Style::new()
        .fg(Color::Red)
        .add_modifier(Modifier::CROSSED_OUT)
}

pub(super) fn added() -> Style {
    Style::new()
        .fg(Color::Green)
        .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
}

/// The lines of each side's output: word-diffed when `diff` is on and both sides have an
/// output, plain otherwise.
pub(super) fn output_lines<'a>(
    diff: bool,
    baseline: Option<&'a str>,
    draft: Option<&'a str>,
) -> (Vec<Line<'a>>, Vec<Line<'a>>) {
    match (baseline, draft) {
        (Some(old), Some(new))
            if diff
                && old != new
                && !old.is_empty()
                && !new.is_empty()
                && old.len() + new.len() <= MAX_DIFF_BYTES =>
        {
            word_diff(old, new)
        }
        _ => (
            baseline.map(plain).unwrap_or_default(),
            draft.map(plain).unwrap_or_default(),
        ),
    }
}

fn plain(text: &str) -> Vec<Line<'_>> {
    text.split('\n').map(Line::raw).collect()
}

fn word_diff<'a>(old: &'a str, new: &'a str) -> (Vec<Line<'a>>, Vec<Line<'a>>) {
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_words(old, new);
    let mut old_lines = vec![Line::default()];
    let mut new_lines = vec![Line::default()];
    // Tokens are consecutive slices of the inputs: track byte positions and slice the inputs,
    // so the spans borrow from them.
    let (mut o, mut n) = (0, 0);
    for change in diff.iter_all_changes() {
        let len = change.value().len();
        match change.tag() {
            ChangeTag::Equal => {
                push(
                    &mut old_lines,
                    old.get(o..o + len).unwrap_or(""),
                    Style::new(),
                );
                push(
                    &mut new_lines,
                    new.get(n..n + len).unwrap_or(""),
                    Style::new(),
                );
                o += len;
                n += len;
            }
            ChangeTag::Delete => {
                push(&mut old_lines, old.get(o..o + len).unwrap_or(""), removed());
                o += len;
            }
            ChangeTag::Insert => {
                push(&mut new_lines, new.get(n..n + len).unwrap_or(""), added());
                n += len;
            }
        }
    }
    (old_lines, new_lines)
}

/// Appends `text` to the last line, starting new lines at its newlines.
fn push<'a>(lines: &mut Vec<Line<'a>>, text: &'a str, style: Style) {
    for (i, part) in text.split('\n').enumerate() {
        if i > 0 {
            lines.push(Line::default());
        }
        if !part.is_empty()
            && let Some(line) = lines.last_mut()
        {
            line.push_span(Span::styled(part, style));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line<'_>]) -> String {
        lines
            .iter()
            .map(|l| {
                l.spans
                    .iter()
                    .map(|s| s.content.as_ref())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn sides_keep_their_text_and_mark_changed_words() {
        let (old, new) = output_lines(
            true,
            Some("We will refund you\nThanks"),
            Some("We cannot refund you\nThanks!"),
        );
        assert_eq!(text(&old), "We will refund you\nThanks");
        assert_eq!(text(&new), "We cannot refund you\nThanks!");
        let marked = |lines: &[Line<'_>], style: Style| -> Vec<String> {
            lines
                .iter()
                .flat_map(|l| &l.spans)
                .filter(|s| s.style == style)
                .map(|s| s.content.to_string())
                .collect()
        };
        assert_eq!(marked(&old, removed()), ["will", "Thanks"]);
        assert_eq!(marked(&new, added()), ["cannot", "Thanks!"]);
    }

    #[test]
    fn no_diff_when_off_or_one_side_missing() {
        let (old, new) = output_lines(false, Some("a"), Some("b"));
        assert!(
            old.iter()
                .chain(&new)
                .flat_map(|l| &l.spans)
                .all(|s| s.style == Style::new())
        );
        let (old, new) = output_lines(true, None, Some("b"));
        assert!(old.is_empty());
        assert_eq!(text(&new), "b");
    }
}
