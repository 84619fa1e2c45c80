//! The error panel: problems in the project files, each as `file:line:col: message` with its
//! help, in a red-bordered box above the last good results (which are dimmed: they are stale).

use flowrun_core::diag::Severity;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};

use super::{bold, dim, to_u16};
use crate::app::App;

/// Rows the panel takes in `body`: what its lines need, at most half of the body (or all of a
/// short one).
pub(super) fn height(app: &App, body: Rect) -> u16 {
    let width = body.width.saturating_sub(2);
    let need = paragraph(app).line_count(width).saturating_add(2);
    let cap = (body.height / 2).max(body.height.min(4));
    to_u16(need).min(cap)
}

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    if area.is_empty() {
        return;
    }
    let n = app.errors.len();
    let title = format!(
        " {n} problem{} in the project files · results below are from the last good load ",
        if n == 1 { "" } else { "s" }
    );
    let red = Style::new().fg(Color::Red);
    let block = Block::bordered()
        .border_style(red)
        .title(Line::styled(title, red.add_modifier(Modifier::BOLD)));
    paragraph(app).block(block).render(area, buf);
}

fn paragraph(app: &App) -> Paragraph<'_> {
    let mut lines = Vec::with_capacity(app.errors.len() * 2);
    for d in &app.errors {
        let place = match d.location {
            Some(loc) => format!("{}:{}:{}: ", d.file, loc.line, loc.col),
            None => format!("{}: ", d.file),
        };
        let mut spans = vec![Span::styled(place, bold())];
        if d.severity == Severity::Warning {
            spans.push(Span::styled(
                "warning: ",
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            ));
        }
        spans.push(Span::raw(d.message.as_str()));
        if let Some(label) = &d.label {
            spans.push(Span::styled(format!(" ({label})"), dim()));
        }
        lines.push(Line::from(spans));
        if let Some(help) = &d.help {
            lines.push(Line::from(vec![
                Span::styled("  help: ", bold()),
                Span::raw(help.as_str()),
            ]));
        }
    }
    Paragraph::new(lines).wrap(Wrap { trim: false })
}
