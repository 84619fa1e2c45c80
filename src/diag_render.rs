//! Renders diagnostics rustc-style: `file:line:col`, the source line underlined, a hint.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use flowrun_core::Diagnostic;
use flowrun_core::diag::Severity;

/// One diagnostic as text, coloured when `color`.
pub fn render(d: &Diagnostic, color: bool) -> String {
    let level = match d.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let source = d.source.as_deref();
    let mut group = match (source, d.location) {
        (Some(text), Some(loc)) => {
            let end = (loc.offset + loc.len.max(1))
                .min(text.len())
                .max(loc.offset);
            let mut ann = AnnotationKind::Primary.span(loc.offset..end);
            if let Some(label) = &d.label {
                ann = ann.label(label.as_str());
            }
            let snippet = Snippet::source(text)
                .path(d.file.as_str())
                .fold(true)
                .annotation(ann);
            level.primary_title(d.message.as_str()).element(snippet)
        }
        _ => level
            .primary_title(d.message.as_str())
            .element(Level::NOTE.message(format!("in {}", d.file))),
    };
    if let Some(help) = &d.help {
        group = group.element(Level::HELP.message(help.as_str()));
    }
    let report: [Group<'_>; 1] = [group];
    renderer.render(&report)
}

/// All diagnostics, then a count line.
pub fn render_all(diags: &[Diagnostic], color: bool) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render(d, color));
        out.push_str("\n\n");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let noun = if errors == 1 { "problem" } else { "problems" };
    out.push_str(&format!("error: found {errors} {noun}\n"));
    out
}
