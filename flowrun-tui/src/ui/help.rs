//! The help overlay: a centered box listing every key, and what the list markers mean.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use super::{bold, dim, pad, to_u16};

const KEYS: [(&str, &str); 15] = [
    ("j/k ↑/↓", "move (scroll in details)"),
    ("PgUp/PgDn", "page up / down"),
    ("g / G", "top / bottom"),
    ("enter", "details of the case"),
    ("esc", "back (clears the filter)"),
    ("r", "re-run the case's draft"),
    ("R", "re-run every draft"),
    ("b", "switch baseline"),
    ("/", "filter by name, file, tag"),
    ("f", "failing/changed only"),
    ("d", "toggle diff highlighting"),
    ("s", "save as an evaluation"),
    ("?", "this help"),
    ("q", "quit"),
    ("", ""),
];

pub(super) fn render(area: Rect, buf: &mut Buffer) {
    let mut lines: Vec<Line<'_>> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(pad(key, 11), bold().fg(Color::Cyan)),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(vec![
        Span::styled("↑", bold()),
        Span::raw(" now passes  "),
        Span::styled("↓", bold()),
        Span::raw(" now fails  "),
        Span::styled("~", bold()),
        Span::raw(" score moved"),
    ]));
    lines.push(Line::styled("✓ pass  ✗ fail  · pending  ⠋ running", dim()));
    let width = area.width.min(42);
    let height = area.height.min(to_u16(lines.len()) + 2);
    let x = area.x + (area.width - width) / 2;
    let y = area.y + (area.height - height) / 2;
    let boxed = Rect::new(x, y, width, height);
    Clear.render(boxed, buf);
    let block = Block::bordered()
        .border_style(Style::new().fg(Color::Cyan))
        .title(Line::styled(" keys · esc closes ", bold()));
    Paragraph::new(lines).block(block).render(boxed, buf);
}
