//! YAML loading that remembers where every value came from.
//!
//! serde_yaml reports positions only for syntax errors, so a semantic error ("unknown prompt")
//! could not point at its line. Here yaml-rust2's event parser builds a `serde_json::Value` and,
//! beside it, a [`SpanMap`] from each value's path (`steps[1].prompt`) to its position. Typed
//! specs are then deserialized from the value with `serde_path_to_error`, so every error, from
//! serde or from our own checks, is reported at a path and located through the map.

use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Diagnostic, LineIndex, Location, did_you_mean};

/// A path to a value inside a document: keys and indices from the root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path(Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Path {
    pub fn root() -> Self {
        Path(Vec::new())
    }

    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.into()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub fn parent(&self) -> Option<Path> {
        let mut p = self.clone();
        p.0.pop().map(|_| p)
    }

    fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let mut p = Path::root();
        for seg in path.iter() {
            p = match seg {
                Segment::Seq { index } => p.index(*index),
                Segment::Map { key } => p.key(key.clone()),
                Segment::Enum { .. } | Segment::Unknown => p,
            };
        }
        p
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str(".");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where a value (and, in a mapping, its key) stands in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpan {
    pub key: Option<Location>,
    pub value: Location,
    /// Whether the value is a block scalar (`|` or `>`); its span is its first content character.
    pub block: bool,
}

/// Positions of every value of a document, by path.
#[derive(Debug, Clone, Default)]
pub struct SpanMap(HashMap<Path, NodeSpan>);

impl SpanMap {
    pub fn get(&self, path: &Path) -> Option<&NodeSpan> {
        self.0.get(path)
    }

    /// The value's location at `path`, or the closest ancestor's.
    pub fn value_or_parent(&self, path: &Path) -> Option<Location> {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(span) = self.0.get(&cur) {
                return Some(span.value);
            }
            p = cur.parent();
        }
        None
    }

    /// The key's location at `path` (falling back to the value, then ancestors).
    pub fn key_or_value(&self, path: &Path) -> Option<Location> {
        match self.0.get(path) {
            Some(span) => Some(span.key.unwrap_or(span.value)),
            None => self.value_or_parent(path),
        }
    }
}

/// One parsed YAML file: its value, positions, and text.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    pub text: Arc<str>,
    pub value: Value,
    pub spans: SpanMap,
}

impl Document {
    /// Parses `text`; a syntax error comes back as a located diagnostic.
    pub fn parse(file: impl Into<String>, text: impl Into<Arc<str>>) -> Result<Self, Diagnostic> {
        let file = file.into();
        let text: Arc<str> = text.into();
        match build(&text) {
            Ok((value, spans)) => Ok(Document {
                file,
                text,
                value,
                spans,
            }),
            Err(e) => Err(e.diagnostic(&file, text)),
        }
    }

    /// Parses `text[row]`, a row that starts line `line` (1-based) of `text`, as a document of
    /// its own whose positions are positions in `text`: a row of a JSON Lines file. The row is
    /// parsed without the rest of the file, so reading every row of a file takes time linear
    /// in its size, and all the rows share the one `text`.
    pub fn parse_row(
        file: impl Into<String>,
        text: Arc<str>,
        row: std::ops::Range<usize>,
        line: usize,
    ) -> Result<Self, Diagnostic> {
        let file = file.into();
        let start = row.start;
        // The row starts a line, so only offsets and line numbers move; columns stay.
        let shift = |loc: Location| Location {
            offset: loc.offset + start,
            line: loc.line + line - 1,
            ..loc
        };
        let built = build(&text[row]);
        match built {
            Ok((value, spans)) => Ok(Document {
                file,
                value,
                spans: SpanMap(
                    spans
                        .0
                        .into_iter()
                        .map(|(path, span)| {
                            let span = NodeSpan {
                                key: span.key.map(shift),
                                value: shift(span.value),
                                block: span.block,
                            };
                            (path, span)
                        })
                        .collect(),
                ),
                text,
            }),
            Err(mut e) => {
                e.location = shift(e.location);
                Err(e.diagnostic(&file, text))
            }
        }
    }

    /// An error pointing at the value at `path` (or its nearest located ancestor).
    pub fn error_at(&self, path: &Path, message: impl Into<String>) -> Diagnostic {
        let d = Diagnostic::error(&self.file, message);
        match self.spans.value_or_parent(path) {
            Some(loc) => d.with_location(self.text.clone(), loc),
            None => d,
        }
    }

    /// An error pointing at `needle` inside the string value at `path` (or at the value when
    /// the needle is not found).
    pub fn error_in_value(
        &self,
        path: &Path,
        value: &str,
        needle: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        let d = Diagnostic::error(&self.file, message);
        let located = self
            .spans
            .get(path)
            .map(|span| match find_word(value, needle) {
                Some(at) => scalar_location(&self.text, span, value, at, needle.len()),
                None => span.value,
            });
        match located.or_else(|| self.spans.value_or_parent(path)) {
            Some(loc) => d.with_location(self.text.clone(), loc),
            None => d,
        }
    }

    /// An error pointing at the key of the entry at `path`.
    pub fn error_at_key(&self, path: &Path, message: impl Into<String>) -> Diagnostic {
        let d = Diagnostic::error(&self.file, message);
        match self.spans.key_or_value(path) {
            Some(loc) => d.with_location(self.text.clone(), loc),
            None => d,
        }
    }

    /// Deserializes the document into `T`, turning serde's error into a located diagnostic
    /// with a "did you mean" hint for unknown keys and variants.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        self.deserialize_at(&Path::root(), &self.value)
    }

    /// Deserializes `value`, found at `base` in this document, into `T`.
    pub fn deserialize_at<T: DeserializeOwned>(
        &self,
        base: &Path,
        value: &Value,
    ) -> Result<T, Diagnostic> {
        serde_path_to_error::deserialize(value).map_err(|err| {
            let mut path = base.clone();
            path.0.extend(Path::from_serde(err.path()).0);
            self.serde_error(&path, &err.into_inner().to_string())
        })
    }

    fn serde_error(&self, path: &Path, message: &str) -> Diagnostic {
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (name, expected) = split_expected(rest);
            let key_path = if path.0.last() == Some(&Seg::Key(name.to_string())) {
                path.clone()
            } else {
                path.key(name)
            };
            let d = self.error_at_key(&key_path, format!("unknown key `{name}`"));
            return d.with_label("not a known key here").with_help(
                did_you_mean(name, expected.iter().map(String::as_str))
                    .unwrap_or_else(|| "remove it".into()),
            );
        }
        if let Some(rest) = message.strip_prefix("unknown variant `") {
            let (name, expected) = split_expected(rest);
            let d = self.error_at(path, format!("unknown value `{name}`"));
            return match did_you_mean(name, expected.iter().map(String::as_str)) {
                Some(help) => d.with_help(help),
                None => d,
            };
        }
        if let Some(field) = message.strip_prefix("missing field `") {
            let field = field.split('`').next().unwrap_or_default();
            return self
                .error_at(path, format!("missing required key `{field}`"))
                .with_help(format!("add `{field}:` here"));
        }
        let message = message
            .replace("invalid type: ", "wrong type: ")
            .replace("expected f64", "expected a number")
            .replace("expected f32", "expected a number")
            .replace("expected u32", "expected a whole number")
            .replace("expected u64", "expected a whole number")
            .replace("expected i64", "expected a whole number")
            .replace("expected a sequence", "expected a list")
            .replace("expected a map", "expected a mapping");
        self.error_at(path, message)
    }
}

/// Why a text is not a document, located in the text that was parsed.
struct BuildError {
    message: String,
    location: Location,
    help: Option<&'static str>,
}

impl BuildError {
    fn diagnostic(self, file: &str, text: Arc<str>) -> Diagnostic {
        let d = Diagnostic::error(file, self.message).with_location(text, self.location);
        match self.help {
            Some(help) => d.with_help(help),
            None => d,
        }
    }
}

/// The value of `text` and the positions of its values.
fn build(text: &str) -> Result<(Value, SpanMap), BuildError> {
    let mut builder = Builder::new(text);
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(BuildError {
            message: format!("invalid YAML: {}", e.info()),
            location: builder.lines.at_line_col(text, m.line(), m.col() + 1, 1),
            help: Some("check the indentation and quoting near this point"),
        });
    }
    if let Some((message, location)) = builder.error {
        return Err(BuildError {
            message,
            location,
            help: None,
        });
    }
    Ok((builder.root.unwrap_or(Value::Null), builder.spans))
}

/// The byte offset of `word` in `text` where it is not part of a longer name.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_name = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

/// Splits serde's "name`, expected one of `a`, `b`" into the name and the expected names.
fn split_expected(rest: &str) -> (&str, Vec<String>) {
    let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    (name, expected)
}

/// Resolves a plain YAML 1.2 (core schema) scalar.
fn plain_scalar(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::from(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::from(i);
    }
    let looks_numeric = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || "+-.".contains(c))
        && s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c));
    if looks_numeric
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s.to_string())
}

enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        pending_key: Option<(String, Location)>,
        anchor: usize,
    },
}

struct Builder<'a> {
    text: &'a str,
    lines: LineIndex,
    stack: Vec<(Frame, Path)>,
    root: Option<Value>,
    spans: SpanMap,
    anchors: HashMap<usize, Value>,
    error: Option<(String, Location)>,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Self {
        Builder {
            text,
            lines: LineIndex::new(text),
            stack: Vec::new(),
            root: None,
            spans: SpanMap::default(),
            anchors: HashMap::new(),
            error: None,
        }
    }

    fn loc(&self, mark: Marker, len: usize) -> Location {
        self.lines
            .at_line_col(self.text, mark.line(), mark.col() + 1, len)
    }

    /// The path the next value will have, and the key's location if it is a mapping value.
    fn next_path(&self) -> (Path, Option<Location>) {
        match self.stack.last() {
            None => (Path::root(), None),
            Some((Frame::Seq { items, .. }, p)) => (p.index(items.len()), None),
            Some((
                Frame::Map {
                    pending_key: Some((k, loc)),
                    ..
                },
                p,
            )) => (p.key(k.clone()), Some(*loc)),
            Some((Frame::Map { .. }, p)) => (p.clone(), None),
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some((
                Frame::Map {
                    pending_key: None,
                    ..
                },
                _
            ))
        )
    }

    fn push_value(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some((Frame::Seq { items, .. }, _)) => items.push(value),
            Some((
                Frame::Map {
                    map, pending_key, ..
                },
                _,
            )) => {
                if let Some((k, _)) = pending_key.take() {
                    map.insert(k, value);
                }
            }
        }
    }

    fn scalar(
        &mut self,
        s: String,
        style: TScalarStyle,
        anchor: usize,
        tag_is_str: bool,
        mark: Marker,
    ) {
        if self.expecting_key() {
            let loc = self.loc(mark, s.len().max(1));
            if let Some((
                Frame::Map {
                    map, pending_key, ..
                },
                _,
            )) = self.stack.last_mut()
            {
                if map.contains_key(&s) && self.error.is_none() {
                    self.error = Some((format!("duplicate key `{s}`"), loc));
                }
                *pending_key = Some((s, loc));
            }
            return;
        }
        let block = matches!(style, TScalarStyle::Literal | TScalarStyle::Folded);
        let quoted = matches!(
            style,
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
        );
        let len = if block {
            1
        } else {
            s.len() + if quoted { 2 } else { 0 }
        };
        let value = if style == TScalarStyle::Plain && !tag_is_str {
            plain_scalar(&s)
        } else {
            Value::String(s)
        };
        let (path, key) = self.next_path();
        let loc = self.loc(mark, len.max(1));
        self.spans.0.insert(
            path,
            NodeSpan {
                key,
                value: loc,
                block,
            },
        );
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        self.push_value(value);
    }

    fn start(&mut self, frame: Frame, mark: Marker) {
        if self.expecting_key() && self.error.is_none() {
            self.error = Some((
                "a mapping key must be a plain value, not a list or mapping".into(),
                self.loc(mark, 1),
            ));
        }
        let (path, key) = self.next_path();
        self.spans.0.insert(
            path.clone(),
            NodeSpan {
                key,
                value: self.loc(mark, 1),
                block: false,
            },
        );
        self.stack.push((frame, path));
    }

    fn end(&mut self) {
        if let Some((frame, _)) = self.stack.pop() {
            let (value, anchor) = match frame {
                Frame::Seq { items, anchor } => (Value::Array(items), anchor),
                Frame::Map { map, anchor, .. } => (Value::Object(map), anchor),
            };
            if anchor > 0 {
                self.anchors.insert(anchor, value.clone());
            }
            self.push_value(value);
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, style, anchor, tag) => {
                let tag_is_str = tag.is_some_and(|t| t.suffix == "str");
                self.scalar(s, style, anchor, tag_is_str, mark);
            }
            Event::SequenceStart(anchor, _) => self.start(
                Frame::Seq {
                    items: Vec::new(),
                    anchor,
                },
                mark,
            ),
            Event::MappingStart(anchor, _) => self.start(
                Frame::Map {
                    map: Map::new(),
                    pending_key: None,
                    anchor,
                },
                mark,
            ),
            Event::SequenceEnd | Event::MappingEnd => self.end(),
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                if self.expecting_key() {
                    let key = value.as_str().unwrap_or_default().to_string();
                    self.scalar(key, TScalarStyle::DoubleQuoted, 0, true, mark);
                } else {
                    let (path, key) = self.next_path();
                    self.spans.0.insert(
                        path,
                        NodeSpan {
                            key,
                            value: self.loc(mark, 1),
                            block: false,
                        },
                    );
                    self.push_value(value);
                }
            }
            _ => {}
        }
    }
}

/// The file location of bytes `offset..offset+len` of a string value, given the value's span
/// and its parsed text. Exact for block scalars (`|`, `>`) and single-line values; close for
/// quoted values with escapes.
pub fn scalar_location(
    file_text: &str,
    span: &NodeSpan,
    value: &str,
    offset: usize,
    len: usize,
) -> Location {
    let offset = offset.min(value.len());
    let before = value.get(..offset).unwrap_or(value);
    let tline = before.matches('\n').count();
    let tcol = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
    let start = span.value;
    let opener = file_text[start.offset..].chars().next().unwrap_or(' ');
    // A block scalar's span starts at its first content character.
    let (line, col) = if span.block {
        (start.line + tline, start.col + tcol)
    } else if tline == 0 {
        let quote = usize::from(opener == '"' || opener == '\'');
        (start.line, start.col + quote + tcol)
    } else {
        (start.line + tline, tcol + 1)
    };
    Location::at_line_col(file_text, line, col, len.max(1))
}

/// Helper for tests and checks: deserialize a standalone YAML string.
pub fn from_str<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostic> {
    Document::parse(file, text)?.deserialize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_positions() {
        let doc = Document::parse(
            "a.yaml",
            "model: fast\nsteps:\n  - id: one\n    n: 3\n  - id: 'two'\n",
        )
        .unwrap();
        assert_eq!(doc.value["steps"][1]["id"], "two");
        assert_eq!(doc.value["steps"][0]["n"], 3);
        let span = doc
            .spans
            .get(&Path::root().key("steps").index(1).key("id"))
            .unwrap();
        assert_eq!((span.value.line, span.value.col), (5, 9));
        assert_eq!(span.key.map(|k| (k.line, k.col)), Some((5, 5)));
    }

    #[test]
    fn scalars_resolve_like_yaml_1_2() {
        let doc = Document::parse(
            "a.yaml",
            "a: yes\nb: true\nc: 1.5\nd: ~\ne: '3'\nf: 0x10\ng: 1e3\n",
        )
        .unwrap();
        assert_eq!(doc.value["a"], "yes");
        assert_eq!(doc.value["b"], true);
        assert_eq!(doc.value["c"], 1.5);
        assert_eq!(doc.value["d"], Value::Null);
        assert_eq!(doc.value["e"], "3");
        assert_eq!(doc.value["f"], 16);
        assert_eq!(doc.value["g"], 1000.0);
    }

    #[test]
    fn positions_inside_scalars() {
        let text = "a: |\n  one\n  two {{ x }}\nb: \"say {{ q }}\"\nc: hi {{ z }}\n";
        let doc = Document::parse("a.yaml", text).unwrap();
        let at = |key: &str, needle: &str| {
            let value = doc.value[key].as_str().unwrap();
            let span = doc.spans.get(&Path::root().key(key)).unwrap();
            let loc = scalar_location(text, span, value, value.find(needle).unwrap(), needle.len());
            (loc.line, loc.col)
        };
        assert_eq!(at("a", "x"), (3, 10));
        assert_eq!(at("b", "q"), (4, 12));
        assert_eq!(at("c", "z"), (5, 10));
    }

    #[test]
    fn anchors_are_copied() {
        let doc = Document::parse("a.yaml", "base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(doc.value["other"]["x"], 1);
    }

    #[test]
    fn syntax_error_is_located() {
        let err = Document::parse("a.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.location.is_some());
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let err = Document::parse("a.yaml", "a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.message, "duplicate key `a`");
        assert_eq!(err.location.map(|l| l.line), Some(2));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Spec {
        model: String,
        items: Vec<Item>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        count: u32,
    }

    #[test]
    fn unknown_key_points_at_key_with_suggestion() {
        let doc =
            Document::parse("a.yaml", "model: x\nitems:\n  - count: 1\n  - cuont: 2\n").unwrap();
        let err = doc.deserialize::<Spec>().unwrap_err();
        assert_eq!(err.message, "unknown key `cuont`");
        assert_eq!(err.help.as_deref(), Some("did you mean `count`?"));
        let loc = err.location.unwrap();
        assert_eq!((loc.line, loc.col), (4, 5));
    }

    #[test]
    fn wrong_type_points_at_value() {
        let doc = Document::parse("a.yaml", "model: x\nitems:\n  - count: many\n").unwrap();
        let err = doc.deserialize::<Spec>().unwrap_err();
        assert!(err.message.starts_with("wrong type"), "{}", err.message);
        let loc = err.location.unwrap();
        assert_eq!((loc.line, loc.col), (3, 12));
    }
}
