//! The side-by-side panel of the selected case: baseline output | draft output (word-diffed),
//! each with its assertion results, tokens, cost, latency and cached tag, or its run error.

use flowrun_core::testing::CaseResult;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};
use unicode_width::UnicodeWidthStr;

use super::{
    bold, change_marker, clean, diff, dim, fail_style, fit, meta_spans, pass_glyph, result_summary,
    slot_word, split_bottom, split_left, split_top, to_u16,
};
use crate::app::{App, CaseRow, Slot};

/// Below this width the two panes are stacked instead of side by side.
const SIDE_BY_SIDE: u16 = 40;

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
            &Line::styled("no case selected", dim()),
            inner.width,
        );
        return;
    };
    let (title_area, panes) = if area.height >= 6 {
        split_top(area, 1)
    } else {
        (Rect::default(), area)
    };
    if !title_area.is_empty() {
        let mut segments = vec![
            (0, vec![Span::styled(row.name.as_str(), bold())]),
            (2, vec![Span::raw(" · "), Span::raw(row.target.as_str())]),
        ];
        if let Some((marker, meaning)) = change_marker(row) {
            segments.push((
                1,
                vec![Span::raw("  "), marker, Span::raw(" "), Span::raw(meaning)],
            ));
        }
        segments.push((
            3,
            vec![Span::styled(
                format!("  {} #{}", row.id.file, row.id.index.saturating_add(1)),
                dim(),
            )],
        ));
        let line = fit(segments, usize::from(title_area.width));
        buf.set_line(title_area.x, title_area.y, &line, title_area.width);
    }

    let baseline_text = row.baseline.result().map(|r| clean(&r.output_text));
    let draft_text = row.draft.result().map(|r| clean(&r.output_text));
    let (baseline_lines, draft_lines) = diff::output_lines(
        app.show_diff,
        baseline_text.as_deref(),
        draft_text.as_deref(),
    );
    let (left, right) = if panes.width >= SIDE_BY_SIDE {
        split_left(panes, panes.width / 2)
    } else {
        split_top(panes, panes.height / 2)
    };
    pane(app, "baseline", &row.baseline, baseline_lines, left, buf);
    pane(app, "draft", &row.draft, draft_lines, right, buf);
}

/// One side: output on top, assertions under it, tokens/cost/latency on the last line.
fn pane(app: &App, label: &str, slot: &Slot, output: Vec<Line<'_>>, area: Rect, buf: &mut Buffer) {
    if area.is_empty() {
        return;
    }
    let mut title = vec![Span::styled(format!(" {label} "), bold())];
    match slot {
        Slot::Done(r) => {
            title.extend(result_summary(r));
            title.push(Span::raw(" "));
            if r.cached {
                title.extend([super::cached(), Span::raw(" ")]);
            }
        }
        Slot::Running => title.push(Span::styled(
            format!("{} ", super::spinner(app.tick)),
            Style::new().fg(Color::Yellow),
        )),
        Slot::Pending => title.push(Span::styled("· ", dim())),
    }
    let block = Block::bordered().title(Line::from(title));
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.is_empty() {
        return;
    }
    let r = match slot_word(slot, app.tick) {
        Ok(r) => r,
        Err(word) => {
            buf.set_line(inner.x, inner.y, &Line::from(word), inner.width);
            return;
        }
    };
    let meta = Paragraph::new(Line::from(meta_spans(r, false))).wrap(Wrap { trim: true });
    let meta_h = match inner.height {
        0 | 1 => 0,
        2..12 => 1,
        _ => meta.line_count(inner.width).min(2),
    };
    let (rest, meta_area) = split_bottom(inner, to_u16(meta_h));
    meta.render(meta_area, buf);
    if rest.is_empty() {
        return;
    }

    let mut body = Vec::with_capacity(output.len() + 1);
    if let Some(error) = &r.error {
        body.push(Line::from(vec![
            Span::styled("error: ", fail_style()),
            Span::styled(clean(error), Style::new().fg(Color::Red)),
        ]));
    }
    if r.output_text.is_empty() {
        if r.error.is_none() {
            body.push(Line::styled("(empty output)", dim()));
        }
    } else {
        body.extend(output);
    }
    let paragraph = Paragraph::new(body).wrap(Wrap { trim: false });
    let out_need = paragraph.line_count(rest.width);
    let checks = assertion_lines(r);
    let wrapped = Paragraph::new(checks.clone()).wrap(Wrap { trim: false });
    let (a_full, a_min) = if checks.is_empty() {
        (0, 0)
    } else {
        (1 + wrapped.line_count(rest.width), 1 + checks.len())
    };
    let h = usize::from(rest.height);
    // Both in full when they fit; else the output in full and one line per assertion; else the
    // output keeps two thirds and the assertions what they need of the rest.
    let (out_h, wrap_assertions) = if out_need + a_full <= h {
        (out_need, true)
    } else if out_need + a_min <= h {
        (out_need, false)
    } else {
        (
            out_need.min((h * 2 / 3).max(h.saturating_sub(a_min))),
            false,
        )
    };
    let (out_area, assertions_area) = split_top(rest, to_u16(out_h));
    if out_h < out_need && out_h >= 2 {
        let (text_area, more_area) = split_bottom(out_area, 1);
        paragraph.render(text_area, buf);
        let hidden = out_need - (out_h - 1);
        let more = more_text(
            &format!("⋯ {hidden} more lines · enter for all"),
            &format!("⋯ +{hidden} lines"),
            more_area.width,
        );
        buf.set_line(
            more_area.x,
            more_area.y,
            &Line::styled(more, dim()),
            more_area.width,
        );
    } else {
        paragraph.render(out_area, buf);
    }
    if assertions_area.is_empty() || checks.is_empty() {
        return;
    }
    let passed = r.assertions.iter().filter(|a| a.pass).count();
    let mut head = vec![Span::styled(
        format!("assertions {passed}/{}", r.assertions.len()),
        dim(),
    )];
    // When they will not all be listed, the head names the failed ones.
    if !wrap_assertions && usize::from(assertions_area.height) <= checks.len() {
        for a in r.assertions.iter().filter(|a| !a.pass) {
            head.extend([
                Span::raw(" "),
                pass_glyph(false),
                Span::raw(" "),
                Span::raw(a.name.as_str()),
            ]);
        }
    }
    let (head_area, list_area) = split_top(assertions_area, 1);
    buf.set_line(head_area.x, head_area.y, &Line::from(head), head_area.width);
    if wrap_assertions {
        wrapped.render(list_area, buf);
        return;
    }
    // One line per assertion, the last row saying how many did not fit; when some do not,
    // the failed ones go first.
    let room = usize::from(list_area.height);
    let shown = if checks.len() <= room {
        checks.len()
    } else {
        room.saturating_sub(1)
    };
    let mut order: Vec<usize> = (0..checks.len()).collect();
    if shown < checks.len() {
        order.sort_by_key(|&i| r.assertions.get(i).is_some_and(|a| a.pass));
    }
    for (y, &i) in order.iter().take(shown).enumerate() {
        if let Some(line) = checks.get(i) {
            buf.set_line(list_area.x, list_area.y + to_u16(y), line, list_area.width);
        }
    }
    let hidden = checks.len() - shown;
    if hidden > 0 && room > 0 {
        let more = more_text(
            &format!("+{hidden} more · enter for all"),
            &format!("+{hidden} more"),
            list_area.width,
        );
        buf.set_line(
            list_area.x,
            list_area.y + to_u16(shown),
            &Line::styled(more, dim()),
            list_area.width,
        );
    }
}

/// `✓ name score reason`, one line per assertion.
fn assertion_lines(r: &CaseResult) -> Vec<Line<'_>> {
    r.assertions
        .iter()
        .map(|a| {
            Line::from(vec![
                pass_glyph(a.pass),
                Span::raw(" "),
                Span::styled(a.name.as_str(), bold()),
                Span::raw(format!(" {:.2} ", a.score)),
                Span::styled(clean(&a.reason).replace('\n', " "), dim()),
            ])
        })
        .collect()
}

/// The long form of a hint when it fits, else the short one.
fn more_text(long: &str, short: &str, width: u16) -> String {
    if long.width() <= usize::from(width) {
        long.to_string()
    } else {
        short.to_string()
    }
}
