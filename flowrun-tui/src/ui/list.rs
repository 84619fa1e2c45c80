//! The case list: cases grouped under their test file, each with its baseline and draft
//! status and a marker when the draft changed the verdict. Virtualized: the window around the
//! selection is computed from the visible indices, and only the rows on screen are built.

use ratatui::buffer::Buffer;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Widget};
use unicode_width::UnicodeWidthStr;

use super::{
    bold, change_marker, dim, fail_style, pad, pass_style, spinner, split_bottom, split_top,
    to_u16, truncate, truncate_left,
};
use crate::app::{App, CaseRow, Slot};

/// A line of the list: a file heading, or a case (its position in the visible indices).
#[derive(Clone, Copy)]
enum Entry<'a> {
    File(&'a str),
    Case(usize),
}

/// Draws the list; returns where the terminal cursor goes while the filter is typed.
pub(super) fn render(
    app: &App,
    visible: &[usize],
    area: Rect,
    buf: &mut Buffer,
) -> Option<Position> {
    if area.is_empty() {
        return None;
    }
    let count = if visible.len() == app.rows.len() {
        format!(" cases ({}) ", app.rows.len())
    } else {
        format!(" cases {} of {} ", visible.len(), app.rows.len())
    };
    // A box only when there is room for it and some rows: a tiny terminal shows bare rows.
    let inner = if area.height >= 5 && area.width >= 16 {
        let mut block = Block::bordered().title(Line::styled(count, bold()));
        if !visible.is_empty() {
            let position = format!(" {}/{} ", app.selected.saturating_add(1), visible.len());
            block = block.title_bottom(Line::styled(position, dim()).right_aligned());
        }
        let inner = block.inner(area);
        block.render(area, buf);
        inner
    } else {
        area
    };
    if inner.is_empty() {
        return None;
    }

    let show_footer =
        app.editing_filter || !app.filter.is_empty() || app.only_interesting || !app.show_diff;
    let (rows_area, footer_area) = if show_footer {
        split_bottom(inner, 1)
    } else {
        (inner, Rect::default())
    };
    let cursor = render_footer(app, footer_area, buf);

    let width = usize::from(rows_area.width);
    let compact = width < 24;
    let status_w = if compact { 1 } else { 5 };
    let name_w = width.saturating_sub(3 + 2 * (status_w + 1));
    let (head_area, rows_area) = if rows_area.height >= 8 {
        split_top(rows_area, 1)
    } else {
        (Rect::default(), rows_area)
    };
    if !head_area.is_empty() {
        let (b, d) = if compact {
            ("b", "d")
        } else {
            ("base", "draft")
        };
        let head = format!(
            "   {} {} {}",
            pad("case", name_w),
            pad(b, status_w),
            pad(d, status_w)
        );
        buf.set_line(
            head_area.x,
            head_area.y,
            &Line::styled(head, dim()),
            head_area.width,
        );
    }
    if rows_area.is_empty() {
        return cursor;
    }
    if visible.is_empty() {
        let message = if app.rows.is_empty() {
            "no test cases found".to_string()
        } else if !app.filter.is_empty() {
            format!("no cases match /{}", app.filter)
        } else {
            "no failing or changed cases".to_string()
        };
        buf.set_line(
            rows_area.x,
            rows_area.y,
            &Line::styled(message, dim()),
            rows_area.width,
        );
        return cursor;
    }

    // The whole list as entries is cheap (no text is built); the window keeps the selection
    // near the middle, so it stays in view without any scroll state.
    let mut entries = Vec::with_capacity(visible.len() + 8);
    let mut last_file: Option<&str> = None;
    let mut selected_line = 0;
    for (pos, &i) in visible.iter().enumerate() {
        let Some(row) = app.rows.get(i) else { continue };
        if last_file != Some(row.id.file.as_str()) {
            last_file = Some(row.id.file.as_str());
            entries.push(Entry::File(row.id.file.as_str()));
        }
        if pos == app.selected {
            selected_line = entries.len();
        }
        entries.push(Entry::Case(pos));
    }
    let height = usize::from(rows_area.height);
    let offset = if entries.len() <= height {
        0
    } else {
        selected_line
            .saturating_sub(height / 2)
            .min(entries.len() - height)
    };

    for (y, entry) in entries.iter().skip(offset).take(height).enumerate() {
        let y = rows_area.y + to_u16(y);
        match *entry {
            Entry::File(file) => {
                let line = Line::styled(
                    truncate_left(file, width).into_owned(),
                    bold().fg(Color::Cyan),
                );
                buf.set_line(rows_area.x, y, &line, rows_area.width);
            }
            Entry::Case(pos) => {
                let Some(row) = visible.get(pos).and_then(|&i| app.rows.get(i)) else {
                    continue;
                };
                let selected = pos == app.selected;
                let line = case_line(app, row, selected, name_w, status_w);
                buf.set_line(rows_area.x, y, &line, rows_area.width);
                if selected {
                    let row_area = Rect::new(rows_area.x, y, rows_area.width, 1);
                    buf.set_style(row_area, Style::new().add_modifier(Modifier::REVERSED));
                }
            }
        }
    }
    cursor
}

/// `› ↓ name             ✓1.00 ✗0.40`
fn case_line<'a>(
    app: &App,
    row: &'a CaseRow,
    selected: bool,
    name_w: usize,
    status_w: usize,
) -> Line<'a> {
    let mut spans = Vec::with_capacity(8);
    spans.push(Span::raw(if selected { "›" } else { " " }));
    spans.push(change_marker(row).map_or(Span::raw(" "), |(marker, _)| marker));
    spans.push(Span::raw(" "));
    let name = pad(&row.name, name_w);
    spans.push(if selected {
        Span::styled(name, bold())
    } else {
        Span::raw(name)
    });
    spans.push(Span::raw(" "));
    spans.push(status(app, &row.baseline, status_w));
    spans.push(Span::raw(" "));
    spans.push(status(app, &row.draft, status_w));
    Line::from(spans)
}

/// One side's status in `width` columns: `✓1.00`, `✗0.40`, `✗ err`, a spinner, or `·`.
fn status(app: &App, slot: &Slot, width: usize) -> Span<'static> {
    let (text, style) = match slot {
        Slot::Pending => ("·".to_string(), dim()),
        Slot::Running => (
            spinner(app.tick).to_string(),
            Style::new().fg(Color::Yellow),
        ),
        Slot::Done(r) => {
            let glyph = if r.pass { "✓" } else { "✗" };
            let detail = if width < 5 {
                String::new()
            } else if r.error.is_some() {
                " err".to_string()
            } else {
                format!("{:.2}", r.score)
            };
            let style = if r.pass { pass_style() } else { fail_style() };
            (format!("{glyph}{detail}"), style)
        }
    };
    Span::styled(pad(truncate(&text, width).as_ref(), width), style)
}

/// The footer: the filter (`/text`) and the modes that hide rows or highlighting; returns the
/// cursor position while the filter is being typed.
fn render_footer(app: &App, area: Rect, buf: &mut Buffer) -> Option<Position> {
    if area.is_empty() {
        return None;
    }
    let mut spans = Vec::with_capacity(3);
    let mut filter_w = 0;
    if app.editing_filter || !app.filter.is_empty() {
        let style = if app.editing_filter {
            bold().fg(Color::Yellow)
        } else {
            Style::new()
        };
        let text = format!("/{}", app.filter);
        // While typing, show the end of a long filter, where the cursor is.
        let shown = truncate_left(&text, usize::from(area.width).saturating_sub(1)).into_owned();
        filter_w = shown.width();
        spans.push(Span::styled(shown, style));
    }
    let mut modes = Vec::new();
    if app.only_interesting {
        modes.push("failing/changed");
    }
    if !app.show_diff {
        modes.push("no diff");
    }
    if !modes.is_empty() {
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled(
            format!("[{}]", modes.join(" · ")),
            bold().fg(Color::Yellow),
        ));
    }
    buf.set_line(area.x, area.y, &Line::from(spans), area.width);
    app.editing_filter.then(|| {
        let x = area
            .x
            .saturating_add(to_u16(filter_w))
            .min(area.right().saturating_sub(1));
        Position::new(x, area.y)
    })
}
