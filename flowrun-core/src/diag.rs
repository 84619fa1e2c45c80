//! Diagnostics: problems found in a user's files, with the place they point at.
//!
//! Loading and checking a project collect every problem they find (not only the first) as
//! [`Diagnostic`]s. The CLI renders them rustc-style with the source snippet; library users get
//! a one-line `Display` (`file:line:col: message`).

use std::fmt;
use std::sync::Arc;

/// A position in a source file: byte offset plus 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub offset: usize,
    pub len: usize,
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// The location of byte `offset` in `text`, underlining `len` bytes.
    pub fn at_offset(text: &str, offset: usize, len: usize) -> Self {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = text[line_start..offset].chars().count() + 1;
        let len = len.min(text.len() - offset);
        Location {
            offset,
            len: floor_char_boundary(&text[offset..], len),
            line,
            col,
        }
    }

    /// The location of 1-based `line` and `col` (in characters) in `text`.
    pub fn at_line_col(text: &str, line: usize, col: usize, len: usize) -> Self {
        let mut offset = 0;
        for (i, l) in text.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                let within: usize = l
                    .chars()
                    .take(col.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                offset += within;
                break;
            }
            offset += l.len();
        }
        Location::at_offset(text, offset, len)
    }
}

/// Where the lines of one text start, so that many positions in it can be located without
/// rescanning the text for each (which makes parsing a big file quadratic). Gives the same
/// locations as [`Location::at_offset`] and [`Location::at_line_col`].
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// Byte offset of the start of every line: 0, then one past each `\n`.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// [`Location::at_offset`] in `text`, the text this index was built from.
    pub fn at_offset(&self, text: &str, offset: usize, len: usize) -> Location {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        // `starts[0]` is 0, so at least one line starts at or before `offset`.
        let line = self.starts.partition_point(|&s| s <= offset);
        let line_start = self.starts[line - 1];
        let col = text[line_start..offset].chars().count() + 1;
        let len = len.min(text.len() - offset);
        Location {
            offset,
            len: floor_char_boundary(&text[offset..], len),
            line,
            col,
        }
    }

    /// [`Location::at_line_col`] in `text`, the text this index was built from.
    pub fn at_line_col(&self, text: &str, line: usize, col: usize, len: usize) -> Location {
        let offset = match line
            .checked_sub(1)
            .and_then(|i| Some((i, *self.starts.get(i)?)))
        {
            // Past the last line (or line 0): the end of the text, as `at_line_col` does.
            None => text.len(),
            Some((i, start)) => {
                let end = self.starts.get(i + 1).copied().unwrap_or(text.len());
                let within: usize = text[start..end]
                    .chars()
                    .take(col.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                start + within
            }
        };
        self.at_offset(text, offset, len)
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a user's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// Path of the file, relative to the project root.
    pub file: String,
    pub location: Option<Location>,
    /// Short text shown under the underlined snippet.
    pub label: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
    /// The file's text, so the problem can be shown in context.
    pub source: Option<Arc<str>>,
}

impl Diagnostic {
    pub fn error(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            file: file.into(),
            location: None,
            label: None,
            help: None,
            source: None,
        }
    }

    pub fn with_location(mut self, source: Arc<str>, location: Location) -> Self {
        self.source = Some(source);
        self.location = Some(location);
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(loc) => write!(
                f,
                "{}:{}:{}: {}",
                self.file, loc.line, loc.col, self.message
            )?,
            None => write!(f, "{}: {}", self.file, self.message)?,
        }
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// A list of problems, returned when something could not be loaded or checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `name`, for "did you mean" hints.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `did you mean `x`?` when a close candidate exists, else the list of valid names.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<String> {
    if let Some(best) = suggest(name, candidates.clone()) {
        return Some(format!("did you mean `{best}`?"));
    }
    let all: Vec<String> = candidates.into_iter().map(|c| format!("`{c}`")).collect();
    if all.is_empty() {
        None
    } else {
        Some(format!("expected one of {}", all.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_chars() {
        let text = "a: 1\nbé: x\n";
        let loc = Location::at_offset(text, text.find('x').unwrap(), 1);
        assert_eq!((loc.line, loc.col), (2, 5));
        let same = Location::at_line_col(text, 2, 5, 1);
        assert_eq!(same.offset, loc.offset);
    }

    #[test]
    fn line_index_locates_like_a_scan() {
        for text in ["", "\n", "a", "a: 1\nbé: x\n", "x\n\ny é\r\nz", "é\n\n"] {
            let index = LineIndex::new(text);
            for offset in 0..=text.len() + 1 {
                for len in [0, 1, 3] {
                    assert_eq!(
                        index.at_offset(text, offset, len),
                        Location::at_offset(text, offset, len),
                        "{text:?} at {offset}"
                    );
                }
            }
            for line in 0..=5 {
                for col in 0..=6 {
                    assert_eq!(
                        index.at_line_col(text, line, col, 2),
                        Location::at_line_col(text, line, col, 2),
                        "{text:?} at {line}:{col}"
                    );
                }
            }
        }
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            suggest("modle", ["model", "params", "messages"]),
            Some("model")
        );
        assert_eq!(suggest("zzz", ["model", "params"]), None);
        assert_eq!(
            did_you_mean("zzz", ["a", "b"]).as_deref(),
            Some("expected one of `a`, `b`")
        );
    }
}
