//! Drawing the dev UI: [`render`] draws one frame from an [`App`] and changes nothing.
//!
//! The screen is a header (totals of both sides and the verdict), the case list next to the
//! side-by-side panel of the selected case (or the detail view), the error panel when the
//! project files have problems, and a status line; help is an overlay. Only what is on screen is
//! laid out: the list builds the rows that fit, and only the selected case's outputs are diffed.
//! Every cue that colour carries (pass/fail, diff, selection) is also carried by a glyph or a
//! modifier, so the UI reads in monochrome.

mod detail;
mod diff;
mod errors;
mod header;
mod help;
mod list;
mod panel;
mod status;
mod steps;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use flowrun_core::testing::CaseResult;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::app::{App, CaseRow, Slot, View};

/// Below this width the list goes above the panel instead of beside it.
const NARROW: u16 = 70;

/// Draws one frame of `app`. Never blocks and never panics, whatever the size of the frame.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.is_empty() {
        return;
    }
    // Computed once per frame: everything below works from these.
    let visible = app.visible();
    let selected = visible.get(app.selected).and_then(|&i| app.rows.get(i));

    let buf = frame.buffer_mut();
    let (rest, status_area) = if area.height >= 2 {
        split_bottom(area, 1)
    } else {
        (Rect::default(), area)
    };
    let (header_area, mut body) = split_top(rest, header::height(rest));
    header::render(app, header_area, buf);
    if !app.errors.is_empty() {
        let (errors_area, below) = split_top(body, errors::height(app, body));
        errors::render(app, errors_area, buf);
        body = below;
    }
    let mut cursor = None;
    match app.view {
        View::Detail => detail::render(app, selected, body, buf),
        View::List | View::Help => {
            if body.width < NARROW {
                let list_h = part(body.height, 2, 5).max(body.height.min(5));
                let (list_area, panel_area) = split_top(body, list_h);
                cursor = list::render(app, &visible, list_area, buf);
                panel::render(app, selected, panel_area, buf);
            } else {
                let list_w = part(body.width, 3, 8).clamp(24, 48);
                let (list_area, panel_area) = split_left(body, list_w);
                cursor = list::render(app, &visible, list_area, buf);
                panel::render(app, selected, panel_area, buf);
            }
        }
    }
    if !app.errors.is_empty() {
        // The last good results stay visible, dimmed: they are stale.
        buf.set_style(body, Style::new().add_modifier(Modifier::DIM));
    }
    status::render(app, status_area, buf);
    if app.view == View::Help {
        help::render(area, buf);
    } else if let Some(position) = cursor {
        frame.set_cursor_position(position);
    }
}

/// `area` cut in two at `height` rows from the top.
fn split_top(area: Rect, height: u16) -> (Rect, Rect) {
    let h = height.min(area.height);
    (
        Rect::new(area.x, area.y, area.width, h),
        Rect::new(
            area.x,
            area.y.saturating_add(h),
            area.width,
            area.height - h,
        ),
    )
}

/// `area` cut in two at `height` rows from the bottom.
fn split_bottom(area: Rect, height: u16) -> (Rect, Rect) {
    split_top(area, area.height.saturating_sub(height))
}

/// `area` cut in two at `width` columns from the left.
fn split_left(area: Rect, width: u16) -> (Rect, Rect) {
    let w = width.min(area.width);
    (
        Rect::new(area.x, area.y, w, area.height),
        Rect::new(
            area.x.saturating_add(w),
            area.y,
            area.width - w,
            area.height,
        ),
    )
}

/// `n * num / den` without overflow.
fn part(n: u16, num: u32, den: u32) -> u16 {
    u16::try_from(u32::from(n) * num / den.max(1)).unwrap_or(u16::MAX)
}

/// A count as a terminal dimension, saturating.
fn to_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// `s` cut to `max` columns, ending in `…` when cut.
fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.width() <= max {
        return Cow::Borrowed(s);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let mut out = String::with_capacity(max + 3);
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    Cow::Owned(out)
}

/// `s` cut to `max` columns from the left (`…/tests/a.test.yaml`), for paths.
fn truncate_left(s: &str, max: usize) -> Cow<'_, str> {
    if s.width() <= max {
        return Cow::Borrowed(s);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let mut tail = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        tail.push(c);
        used += w;
    }
    let mut out = String::from("…");
    out.extend(tail.into_iter().rev());
    Cow::Owned(out)
}

/// `s` cut or padded with spaces to exactly `width` columns.
fn pad(s: &str, width: usize) -> String {
    let cut = truncate(s, width);
    let fill = width.saturating_sub(cut.width());
    let mut out = String::with_capacity(cut.len() + fill);
    out.push_str(&cut);
    out.extend(std::iter::repeat_n(' ', fill));
    out
}

/// Text from a model made safe to draw: tabs become spaces, other control characters (`\r`,
/// escape sequences' ESC) go; newlines stay.
fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A spinner frame for `tick`.
fn spinner(tick: usize) -> &'static str {
    const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
    FRAMES[tick % FRAMES.len()]
}

/// `850ms`, `1.2s`, `2m05s`.
fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn pass_style() -> Style {
    Style::new().fg(Color::Green)
}

fn fail_style() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

fn dim() -> Style {
    Style::new().add_modifier(Modifier::DIM)
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// `✓` or `✗`, styled.
fn pass_glyph(pass: bool) -> Span<'static> {
    if pass {
        Span::styled("✓", pass_style())
    } else {
        Span::styled("✗", fail_style())
    }
}

/// How the draft compares with the baseline, as a one-column marker and its meaning.
fn change_marker(row: &CaseRow) -> Option<(Span<'static>, &'static str)> {
    if !row.changed() {
        return None;
    }
    let (d, b) = (row.draft.result()?, row.baseline.result()?);
    Some(if d.pass && !b.pass {
        (
            Span::styled("↑", pass_style().add_modifier(Modifier::BOLD)),
            "draft now passes",
        )
    } else if !d.pass && b.pass {
        (Span::styled("↓", fail_style()), "draft now fails")
    } else if d.score > b.score {
        (
            Span::styled("~", Style::new().fg(Color::Yellow)),
            "draft scores higher",
        )
    } else {
        (
            Span::styled("~", Style::new().fg(Color::Yellow)),
            "draft scores lower",
        )
    })
}

/// A finished side's result line: `✓ 0.80` or `✗ error`.
fn result_summary(r: &CaseResult) -> Vec<Span<'static>> {
    let score = if r.error.is_some() {
        " error".to_string()
    } else {
        format!(" {:.2}", r.score)
    };
    vec![
        pass_glyph(r.pass),
        Span::styled(score, if r.pass { pass_style() } else { fail_style() }),
    ]
}

/// Latency, tokens and cost of a finished side (the cost last: unknown, it is long), and the
/// cached tag when asked.
fn meta_spans(r: &CaseResult, cached_tag: bool) -> Vec<Span<'static>> {
    let mut spans = vec![Span::styled(
        format!(
            "{} · {}→{} tok · {}",
            fmt_ms(r.latency_ms),
            r.usage.input_tokens,
            r.usage.output_tokens,
            r.cost
        ),
        dim(),
    )];
    if cached_tag && r.cached {
        spans.push(Span::styled(" · ", dim()));
        spans.push(cached());
    }
    spans
}

/// The `cached` tag: every model call of the run was answered from the cache or a cassette.
fn cached() -> Span<'static> {
    Span::styled(
        "cached",
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
    )
}

/// The segments that fit in `width`, shown in their order but chosen by priority (lower is
/// more important): a narrow line drops its least important fields whole instead of cutting
/// them. Priority 0 segments always stay (the buffer cuts them at the edge).
fn fit<'a>(segments: Vec<(u8, Vec<Span<'a>>)>, width: usize) -> Line<'a> {
    let widths: Vec<usize> = segments
        .iter()
        .map(|(_, s)| s.iter().map(Span::width).sum())
        .collect();
    let mut order: Vec<usize> = (0..segments.len()).collect();
    order.sort_by_key(|&i| segments[i].0);
    let mut keep = vec![false; segments.len()];
    let mut used = 0;
    for i in order {
        if segments[i].0 == 0 || used + widths[i] <= width {
            keep[i] = true;
            used += widths[i];
        }
    }
    let spans = segments
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .flat_map(|((_, s), _)| s);
    Line::from(spans.collect::<Vec<_>>())
}

/// The finished result of a slot, with a word for the others.
fn slot_word(slot: &Slot, tick: usize) -> Result<&CaseResult, Vec<Span<'static>>> {
    match slot {
        Slot::Done(r) => Ok(r),
        Slot::Running => Err(vec![
            Span::styled(spinner(tick), Style::new().fg(Color::Yellow)),
            Span::raw(" running…"),
        ]),
        Slot::Pending => Err(vec![Span::styled("· not run yet", dim())]),
    }
}
