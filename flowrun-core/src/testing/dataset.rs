//! Dataset files of test cases: JSON Lines, CSV and YAML, each row a case.
//!
//! A row with an `input` mapping is a full case (`input`, `name`, `tags`, `vars`, `assert`,
//! `threshold`); any other row is the input itself. CSV columns are inputs, except the
//! columns `name` and `tags` (comma-separated); their texts are typed later by the target's
//! declared inputs.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Location};
use crate::spec::CaseSpec;
use crate::yaml::{Document, Path};

/// One case read from a dataset, with where it came from.
#[derive(Debug, Clone)]
pub struct DatasetRow {
    pub case: CaseSpec,
    /// 1-based line of the row's start.
    pub line: usize,
    /// The row's text as a document, so its assertions can be located (JSONL and YAML). The
    /// rows of a YAML file share its one document.
    pub doc: Option<Arc<Document>>,
    /// Where the row is in `doc`.
    pub path: Path,
    /// CSV values are text to be typed by the target's inputs.
    pub untyped: bool,
    /// The whole file, for showing a row in diagnostics.
    pub text: Arc<str>,
}

/// The format of a dataset, by file extension.
pub fn format_of(path: &str) -> Option<&'static str> {
    let ext = path.rsplit('.').next()?.to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "ndjson" => Some("jsonl"),
        "csv" => Some("csv"),
        "yaml" | "yml" => Some("yaml"),
        "json" => Some("json"),
        _ => None,
    }
}

/// Reads every row of the dataset file `path` with contents `text`.
pub fn parse(path: &str, text: &str) -> Result<Vec<DatasetRow>, Diagnostic> {
    match format_of(path) {
        Some("jsonl") => parse_jsonl(path, text),
        Some("csv") => parse_csv(path, text),
        Some("yaml") | Some("json") => parse_yaml(path, text),
        _ => Err(Diagnostic::error(path, "unknown dataset format")
            .with_help("use a `.jsonl`, `.csv` or `.yaml` file")),
    }
}

fn row_case(doc: &Document, path: &Path, value: &Value) -> Result<CaseSpec, Diagnostic> {
    match value {
        Value::Object(m) if m.get("input").is_some_and(Value::is_object) => {
            doc.deserialize_at(path, value)
        }
        Value::Object(m) => Ok(CaseSpec {
            input: m.clone(),
            ..CaseSpec::default()
        }),
        _ => Err(doc.error_at(path, "a dataset row must be a mapping of input values")),
    }
}

fn parse_jsonl(path: &str, text: &str) -> Result<Vec<DatasetRow>, Diagnostic> {
    let shared: Arc<str> = text.into();
    let mut rows = Vec::new();
    let mut start = 0;
    // Lines as `str::lines` splits them, with where each starts.
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line_start = start;
        start += raw.len();
        let line = match raw.strip_suffix('\n') {
            Some(l) => l.strip_suffix('\r').unwrap_or(l),
            None => raw,
        };
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        if let Err(e) = serde_json::from_str::<Value>(line) {
            let loc = Location::at_line_col(text, n, e.column().max(1), 1);
            // serde's own "at line 1 column N" counts within the row; the location says where.
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            return Err(Diagnostic::error(path, format!("invalid JSON: {message}"))
                .with_location(shared, loc));
        }
        // Positions in the row's document are positions in the file.
        let row = line_start..line_start + line.len();
        let doc = Document::parse_row(path, shared.clone(), row, n)?;
        let value = doc.value.clone();
        let case = row_case(&doc, &Path::root(), &value)?;
        rows.push(DatasetRow {
            case,
            line: n,
            doc: Some(Arc::new(doc)),
            path: Path::root(),
            untyped: false,
            text: shared.clone(),
        });
    }
    Ok(rows)
}

fn parse_yaml(path: &str, text: &str) -> Result<Vec<DatasetRow>, Diagnostic> {
    let doc = Arc::new(Document::parse(path, text)?);
    let Value::Array(items) = &doc.value else {
        return Err(doc.error_at(&Path::root(), "a YAML dataset must be a list of rows"));
    };
    let mut rows = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = Path::root().index(i);
        let case = row_case(&doc, &p, item)?;
        let line = doc.spans.get(&p).map_or(1, |s| s.value.line);
        rows.push(DatasetRow {
            case,
            line,
            doc: Some(doc.clone()),
            path: p,
            untyped: false,
            text: doc.text.clone(),
        });
    }
    Ok(rows)
}

fn parse_csv(path: &str, text: &str) -> Result<Vec<DatasetRow>, Diagnostic> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(1, |p| p.line() as usize);
        Diagnostic::error(path, format!("invalid CSV: {e}"))
            .with_location(text.into(), Location::at_line_col(text, line, 1, 1))
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let mut rows = Vec::new();
    let shared: Arc<str> = text.into();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(1, |p| p.line() as usize);
        let mut case = CaseSpec::default();
        let mut input = Map::new();
        for (header, value) in headers.iter().zip(record.iter()) {
            match header {
                "name" => case.name = Some(value.to_string()),
                "tags" => {
                    case.tags = value
                        .split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect()
                }
                _ => {
                    input.insert(header.to_string(), Value::String(value.to_string()));
                }
            }
        }
        case.input = input;
        rows.push(DatasetRow {
            case,
            line,
            doc: None,
            path: Path::root(),
            untyped: true,
            text: shared.clone(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_rows_are_inputs_or_cases() {
        let text = "{\"ticket\": \"a\"}\n\n{\"input\": {\"ticket\": \"b\"}, \"name\": \"named\", \"tags\": [\"x\"]}\n";
        let rows = parse("data/t.jsonl", text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].case.input["ticket"], "a");
        assert_eq!(rows[1].case.name.as_deref(), Some("named"));
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn jsonl_rows_locate_in_the_file_and_share_its_text() {
        let text = "{\"q\": \"a\"}\r\n\n  {\"input\": {\"q\": \"é\"}, \"assert\": [{\"contains\": \"b\"}]}\n";
        let rows = parse("d.jsonl", text).unwrap();
        assert_eq!(rows.len(), 2);
        let doc = rows[1].doc.as_ref().unwrap();
        assert!(Arc::ptr_eq(&doc.text, &rows[0].doc.as_ref().unwrap().text));
        assert!(Arc::ptr_eq(&doc.text, &rows[1].text));
        assert_eq!(&*doc.text, text);
        let check = Path::root().key("assert").index(0).key("contains");
        let loc = doc.spans.get(&check).unwrap().value;
        assert_eq!(&text[loc.offset..loc.offset + loc.len], "\"b\"");
        assert_eq!(loc, Location::at_offset(text, loc.offset, loc.len));
        let key = doc
            .spans
            .get(&Path::root().key("input"))
            .unwrap()
            .key
            .unwrap();
        assert_eq!((key.line, key.col), (3, 4));
        // A problem found later in the row points into the file.
        let d = doc.error_at(&check, "bad");
        assert_eq!(d.location, Some(loc));
        assert_eq!(d.source.as_deref(), Some(text));
    }

    #[test]
    fn rows_far_down_a_jsonl_file_share_its_text() {
        let text: String = (0..3_000)
            .map(|i| format!("{{\"input\": {{\"q\": \"question {i}\"}}, \"assert\": [{{\"contains\": \"{i}\"}}]}}\n"))
            .collect();
        let rows = parse("d.jsonl", &text).unwrap();
        assert_eq!(rows.len(), 3_000);
        let last = rows[2_999].doc.as_ref().unwrap();
        assert!(Arc::ptr_eq(&last.text, &rows[0].text));
        let loc = last.spans.get(&Path::root().key("input")).unwrap().value;
        assert_eq!(loc.line, 3_000);
        assert_eq!(&text[loc.offset..loc.offset + 1], "{");
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let err = parse("d.jsonl", "{\"a\": 1}\n{\"a\": }\n").unwrap_err();
        assert_eq!(err.location.map(|l| l.line), Some(2));
        assert_eq!(err.message, "invalid JSON: expected value");
    }

    #[test]
    fn csv_columns_become_text_inputs() {
        let rows = parse(
            "d.csv",
            "name,ticket,tags\nfirst,\"I was, charged\",\"billing, urgent\"\n",
        )
        .unwrap();
        assert_eq!(rows[0].case.name.as_deref(), Some("first"));
        assert_eq!(rows[0].case.input["ticket"], "I was, charged");
        assert_eq!(rows[0].case.tags, ["billing", "urgent"]);
        assert!(rows[0].untyped);
        assert_eq!(rows[0].line, 2);
    }

    #[test]
    fn yaml_rows_keep_positions() {
        let rows = parse(
            "d.yaml",
            "- ticket: a\n- input: {ticket: b}\n  assert: [{contains: b}]\n",
        )
        .unwrap();
        assert_eq!(rows[1].line, 2);
        assert_eq!(rows[1].case.assertions.len(), 1);
    }
}
