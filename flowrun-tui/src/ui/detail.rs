//! The detail view of the selected case: its input, and for each side its output in full
//! (word-diffed), every assertion with its score and reason, the run id, and the run's steps
//! with their rendered messages and raw responses (`steps.rs`) once they have loaded.

use flowrun_core::event::RunStatus;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};

use super::steps;
use super::{
    bold, clean, diff, dim, fail_style, meta_spans, pass_glyph, result_summary, slot_word, to_u16,
};
use crate::app::{App, CaseRow, RunLoad, Side, Slot};

pub(super) fn render(app: &App, row: Option<&CaseRow>, area: Rect, buf: &mut Buffer) {
    if area.is_empty() {
        return;
    }
    let Some(row) = row else {
        let block = Block::bordered();
        let inner = block.inner(area);
        block.render(area, buf);
        buf.set_line(
            inner.x,
            inner.y,
            &Line::styled("no case selected · esc back", dim()),
            inner.width,
        );
        return;
    };
    let block = Block::bordered().title(Line::from(vec![
        Span::styled(format!(" {} ", row.name), bold()),
        Span::styled(
            format!("· {} #{} ", row.id.file, row.id.index.saturating_add(1)),
            dim(),
        ),
    ]));
    let inner = block.inner(area);

    // The input is the same on both sides; take it from whichever has run.
    let input =
        row.draft.result().or(row.baseline.result()).map(|r| {
            serde_json::to_string_pretty(&r.input).unwrap_or_else(|_| r.input.to_string())
        });
    let baseline_text = row.baseline.result().map(|r| clean(&r.output_text));
    let draft_text = row.draft.result().map(|r| clean(&r.output_text));
    let (baseline_lines, draft_lines) = diff::output_lines(
        app.show_diff,
        baseline_text.as_deref(),
        draft_text.as_deref(),
    );

    let mut lines: Vec<Line<'_>> = Vec::new();
    lines.push(field("target", row.target.as_str()));
    if !row.tags.is_empty() {
        lines.push(field("tags", row.tags.join(", ")));
    }
    lines.push(heading("input"));
    match &input {
        Some(input) => lines.extend(input.lines().map(Line::raw)),
        None => lines.push(Line::styled("(shown once the case has run)", dim())),
    }
    let width = usize::from(inner.width);
    let baseline_title = format!("baseline · {}", app.baseline_label);
    side(
        app,
        &baseline_title,
        &row.baseline,
        app.detail.get(Side::Baseline),
        baseline_lines,
        width,
        &mut lines,
    );
    side(
        app,
        "draft",
        &row.draft,
        app.detail.get(Side::Draft),
        draft_lines,
        width,
        &mut lines,
    );

    let paragraph = Paragraph::new(lines).wrap(Wrap { trim: false });
    let total = paragraph.line_count(inner.width);
    let height = usize::from(inner.height);
    let scroll = usize::from(app.detail_scroll).min(total.saturating_sub(height));
    let block = if total > height {
        let last = (scroll + height).min(total);
        block.title_bottom(
            Line::styled(format!(" {}–{last} of {total} ", scroll + 1), dim()).right_aligned(),
        )
    } else {
        block
    };
    block.render(area, buf);
    paragraph.scroll((to_u16(scroll), 0)).render(inner, buf);
}

/// One side's section: status, run id, output, assertions, steps.
fn side<'a>(
    app: &App,
    title: &str,
    slot: &'a Slot,
    load: &RunLoad,
    output: Vec<Line<'a>>,
    width: usize,
    lines: &mut Vec<Line<'a>>,
) {
    lines.push(Line::default());
    let rule = format!("── {title} ");
    let fill = width.saturating_sub(unicode_width::UnicodeWidthStr::width(rule.as_str()));
    lines.push(Line::styled(
        format!("{rule}{}", "─".repeat(fill)),
        bold().add_modifier(Modifier::REVERSED),
    ));
    let r = match slot_word(slot, app.tick) {
        Ok(r) => r,
        Err(word) => {
            lines.push(Line::from(word));
            return;
        }
    };
    let mut status = result_summary(r);
    status.push(Span::styled(" · ", dim()));
    status.extend(meta_spans(r, true));
    if r.status != RunStatus::Succeeded {
        status.push(Span::styled(
            format!(" · run {}", r.status.as_str()),
            fail_style(),
        ));
    }
    lines.push(Line::from(status));
    match &r.run_id {
        Some(id) => lines.push(Line::from(vec![
            Span::styled("run ", dim()),
            Span::raw(id.as_str()),
        ])),
        None => lines.push(Line::styled(
            "run – (the case did not get as far as running)",
            dim(),
        )),
    }
    if let Some(error) = &r.error {
        lines.push(Line::from(vec![
            Span::styled("error: ", fail_style()),
            Span::styled(clean(error).into_owned(), Style::new().fg(Color::Red)),
        ]));
    }
    lines.push(heading("output"));
    if r.output_text.is_empty() {
        lines.push(Line::styled("(empty output)", dim()));
    } else {
        lines.extend(output);
    }
    assertions(r, lines);
    // The loaded run, if it is this result's (a stale one is never shown).
    if load.run_id().is_some() && load.run_id() == r.run_id.as_deref() {
        lines.push(heading("steps"));
        steps::lines(load, lines);
    }
}

fn assertions<'a>(r: &'a flowrun_core::testing::CaseResult, lines: &mut Vec<Line<'a>>) {
    if r.assertions.is_empty() {
        return;
    }
    let passed = r.assertions.iter().filter(|a| a.pass).count();
    lines.push(heading(format!(
        "assertions {passed}/{}",
        r.assertions.len()
    )));
    for a in &r.assertions {
        let mut spans = vec![
            pass_glyph(a.pass),
            Span::raw(" "),
            Span::styled(a.name.as_str(), bold()),
            Span::raw(format!(" {:.2}", a.score)),
        ];
        if (a.weight - 1.0).abs() > 1e-9 {
            spans.push(Span::styled(format!(" · weight {}", a.weight), dim()));
        }
        if a.required {
            spans.push(Span::styled(" · required", dim()));
        }
        lines.push(Line::from(spans));
        for reason in clean(&a.reason).lines() {
            lines.push(Line::from(vec![
                Span::raw("    "),
                Span::styled(reason.to_string(), dim()),
            ]));
        }
    }
}

fn heading<'a>(text: impl Into<std::borrow::Cow<'a, str>>) -> Line<'a> {
    Line::styled(text.into(), bold().add_modifier(Modifier::UNDERLINED))
}

fn field<'a>(name: &'a str, value: impl Into<std::borrow::Cow<'a, str>>) -> Line<'a> {
    Line::from(vec![
        Span::styled(format!("{name:<7}"), dim()),
        Span::raw(value.into()),
    ])
}
