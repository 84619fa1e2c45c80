//! The status line: the last thing that happened, and a short key hint on the right.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use unicode_width::UnicodeWidthStr;

use super::{dim, to_u16, truncate};
use crate::app::{App, View};

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    if area.is_empty() {
        return;
    }
    let (status, hint) = if app.editing_filter {
        ("filter: type to narrow", "enter keep · esc clear")
    } else {
        let hint = match app.view {
            View::List => "? help · q quit",
            View::Detail => "j/k scroll · esc back · ? help",
            View::Help => "esc close · q quit",
        };
        (app.status.as_str(), hint)
    };
    let width = usize::from(area.width);
    let hint_w = hint.width();
    // The hint keeps its place when there is room for it and a bit of the status.
    let show_hint = width >= hint_w + 1 + status.width().min(12);
    let status_w = if show_hint { width - hint_w - 1 } else { width };
    buf.set_line(
        area.x,
        area.y,
        &Line::raw(truncate(status, status_w)),
        to_u16(status_w),
    );
    if show_hint {
        let x = area.x + to_u16(width - hint_w);
        buf.set_line(x, area.y, &Line::styled(hint, dim()), to_u16(hint_w));
    }
}
