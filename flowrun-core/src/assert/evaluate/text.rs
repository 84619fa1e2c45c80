//! Checks on the output text: `equals`, the `contains` family, `regex`, `starts_with`,
//! `length`, and their negations.

use std::borrow::Cow;

use serde_json::Value;

use super::json::{json_eq, output_json};
use super::template::Templates;
use super::{Verdict, cut, quote, show};

/// `equals` / `not_equals`: a string is compared with the trimmed text, anything else with
/// the output as JSON.
pub(super) fn equals(
    t: &Templates<'_>,
    expected: &Value,
    output: &Value,
    text: &str,
    negate: bool,
) -> Verdict {
    let expected = match t.render_value(expected) {
        Ok(v) => v,
        Err(reason) => return Verdict::error(reason),
    };
    if let Value::String(want) = &expected {
        let (got, want) = (text.trim(), want.trim());
        let same = got == want;
        return match (negate, same) {
            (false, true) => Verdict::pass(format!("output equals {}", quote(want))),
            (false, false) => {
                Verdict::fail(format!("expected {}, got {}", quote(want), quote(got)))
            }
            (true, true) => Verdict::fail(format!(
                "expected anything but {}, got exactly that",
                quote(want)
            )),
            (true, false) => Verdict::pass(format!("output differs from {}", quote(want))),
        };
    }
    let actual = match output_json(output) {
        Ok(v) => v,
        Err(e) => {
            let found = format!("the output is not json ({e}): {}", quote(text));
            return if negate {
                Verdict::pass(format!("{found}, so it differs from {}", show(&expected)))
            } else {
                Verdict::fail(format!("expected {}; {found}", show(&expected)))
            };
        }
    };
    let same = json_eq(&actual, &expected);
    match (negate, same) {
        (false, true) => Verdict::pass(format!("output equals {}", show(&expected))),
        (false, false) => Verdict::fail(format!(
            "expected {}, got {}",
            show(&expected),
            show(&actual)
        )),
        (true, true) => Verdict::fail(format!(
            "expected anything but {}, got exactly that",
            show(&expected)
        )),
        (true, false) => Verdict::pass(format!(
            "output {} differs from {}",
            show(&actual),
            show(&expected)
        )),
    }
}

/// How a `contains` check reads its values.
#[derive(Debug, Clone, Copy)]
pub(super) struct ContainsMode {
    pub all: bool,
    pub ignore_case: bool,
    pub negate: bool,
}

/// The `contains` family: any (or, with `all`, every) value appears in the text.
pub(super) fn contains(
    t: &Templates<'_>,
    values: &[String],
    text: &str,
    mode: ContainsMode,
) -> Verdict {
    let values = match values
        .iter()
        .map(|v| t.render(v))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(v) => v,
        Err(reason) => return Verdict::error(reason),
    };
    let haystack = fold(text, mode.ignore_case);
    let (found, missing): (Vec<&str>, Vec<&str>) = values
        .iter()
        .map(String::as_str)
        .partition(|v| haystack.contains(fold(v, mode.ignore_case).as_ref()));
    let satisfied = if mode.all {
        missing.is_empty()
    } else {
        !found.is_empty()
    };
    let case = if mode.ignore_case {
        " (ignoring case)"
    } else {
        ""
    };
    let output = quote(text);
    match (mode.negate, mode.all) {
        (false, false) if satisfied => Verdict::pass(format!("found {}{case}", list(&found))),
        (false, false) => {
            let what = if values.len() == 1 {
                list(&missing)
            } else {
                format!("one of {}", list(&missing))
            };
            Verdict::fail(format!("expected {what}{case}; got {output}"))
        }
        (false, true) if satisfied => Verdict::pass(format!("found all of {}{case}", list(&found))),
        (false, true) => Verdict::fail(format!("missing {}{case} in {output}", list(&missing))),
        (true, false) if satisfied => Verdict::fail(format!(
            "found {}{case}, which should be absent, in {output}",
            list(&found)
        )),
        (true, false) => Verdict::pass(format!("{}{case}", absent(&missing))),
        (true, true) if satisfied => Verdict::fail(format!(
            "found all of {}{case}, which should not all appear, in {output}",
            list(&found)
        )),
        (true, true) => Verdict::pass(format!("not all present{case}: missing {}", list(&missing))),
    }
}

fn fold(s: &str, ignore_case: bool) -> Cow<'_, str> {
    if ignore_case {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(", ")
}

fn absent(items: &[&str]) -> String {
    match items {
        [one] => format!("{} is absent", quote(one)),
        _ => format!("none of {} is present", list(items)),
    }
}

/// `regex` / `not_regex`: the pattern matches somewhere in the text.
pub(super) fn regex(t: &Templates<'_>, pattern: &str, text: &str, negate: bool) -> Verdict {
    let pattern = match t.render(pattern) {
        Ok(p) => p,
        Err(reason) => return Verdict::error(reason),
    };
    let re = match regex::Regex::new(&pattern) {
        Ok(re) => re,
        Err(e) => {
            let first = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_lowercase();
            return Verdict::error(format!(
                "invalid regular expression /{}/: {first}",
                cut(&pattern)
            ));
        }
    };
    let shown = cut(&pattern);
    match (negate, re.find(text)) {
        (false, Some(m)) => Verdict::pass(format!("/{shown}/ matched {}", quote(m.as_str()))),
        (false, None) => Verdict::fail(format!(
            "expected a match for /{shown}/; got {}",
            quote(text)
        )),
        (true, Some(m)) => Verdict::fail(format!(
            "/{shown}/ matched {}, which it should not",
            quote(m.as_str())
        )),
        (true, None) => Verdict::pass(format!("no match for /{shown}/")),
    }
}

/// `starts_with` / `not_starts_with`, on the text without leading whitespace.
pub(super) fn starts_with(t: &Templates<'_>, prefix: &str, text: &str, negate: bool) -> Verdict {
    let prefix = match t.render(prefix) {
        Ok(p) => p,
        Err(reason) => return Verdict::error(reason),
    };
    let text = text.trim_start();
    let starts = text.starts_with(prefix.as_str());
    let (want, got) = (quote(&prefix), quote(text));
    match (negate, starts) {
        (false, true) => Verdict::pass(format!("output starts with {want}")),
        (false, false) => Verdict::fail(format!(
            "expected the output to start with {want}; got {got}"
        )),
        (true, true) => Verdict::fail(format!(
            "expected the output not to start with {want}; got {got}"
        )),
        (true, false) => Verdict::pass(format!("output does not start with {want}")),
    }
}

/// `length`: the text's length in characters is within the bounds.
pub(super) fn length(text: &str, min: Option<usize>, max: Option<usize>) -> Verdict {
    let n = text.chars().count();
    if let Some(min) = min.filter(|m| n < *m) {
        return Verdict::fail(format!("expected at least {min} characters; got {n}"));
    }
    if let Some(max) = max.filter(|m| n > *m) {
        return Verdict::fail(format!("expected at most {max} characters; got {n}"));
    }
    let bounds = match (min, max) {
        (Some(lo), Some(hi)) => format!("within {lo}..{hi}"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, Some(hi)) => format!("at most {hi}"),
        (None, None) => "unbounded".into(),
    };
    Verdict::pass(format!("length {n} is {bounds}"))
}
