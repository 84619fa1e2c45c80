//! The header: the verdict, the baseline, and the totals of both sides (pass rate, mean
//! score, p50 latency, cached count, cost), aligned in columns.

use flowrun_core::testing::Summary;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use unicode_width::UnicodeWidthStr;

use super::{bold, dim, fail_style, fit, fmt_ms, pad, pass_style, spinner, to_u16};
use crate::app::App;

/// Rows the header takes in `area`: three when there is room, one when short, none when tiny.
pub(super) fn height(area: Rect) -> u16 {
    if area.height >= 13 {
        3
    } else if area.height >= 3 {
        1
    } else {
        0
    }
}

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    if area.is_empty() {
        return;
    }
    let width = usize::from(area.width);
    let t = &app.totals;
    let verdict = verdict(app);
    if area.height < 3 {
        let line = fit(
            vec![
                (
                    0,
                    vec![Span::styled(
                        format!("draft {}/{}", t.draft.passed, t.draft.runs),
                        bold(),
                    )],
                ),
                (
                    2,
                    vec![Span::raw(format!(
                        " · base {}/{}",
                        t.baseline.passed, t.baseline.runs
                    ))],
                ),
                (1, [vec![Span::raw(" · ")], verdict].concat()),
            ],
            width,
        );
        buf.set_line(area.x, area.y, &line, area.width);
        return;
    }

    let first = fit(
        vec![
            (0, verdict),
            (
                2,
                vec![
                    Span::raw(" · baseline "),
                    Span::styled(app.baseline_label.as_str(), bold()),
                ],
            ),
            (
                1,
                vec![Span::raw(format!(
                    " · draft wins {} · baseline wins {}",
                    t.draft_wins, t.baseline_wins
                ))],
            ),
            (3, vec![Span::styled(" · flowrun dev", dim())]),
        ],
        width,
    );
    buf.set_line(area.x, area.y, &first, area.width);

    let summaries = [&t.draft, &t.baseline];
    let mut fields = summaries.map(side_fields);
    // The cost, whole, or `cost unknown` when the unknown models do not fit: an unknown cost is
    // never dropped silently nor shown as a number.
    let cost_room =
        width.saturating_sub(9 + 2 + fields.iter().map(|f| f[0].width()).max().unwrap_or(0));
    for (f, s) in fields.iter_mut().zip(summaries) {
        if !s.cost.is_known() && f[5].width() > cost_room {
            f[5] = "cost unknown".into();
        }
    }
    // Every column padded to the wider of the two sides: the numbers line up, and both lines
    // keep the same columns when narrow.
    let mut widths = [0usize; 6];
    for f in &fields {
        for (w, field) in widths.iter_mut().zip(f) {
            *w = (*w).max(field.width());
        }
    }
    for (row, (label, (f, summary))) in ["draft", "baseline"]
        .iter()
        .zip(fields.iter().zip(summaries))
        .enumerate()
    {
        let pass_style = if summary.runs == 0 {
            Style::new()
        } else if summary.failed == 0 {
            pass_style()
        } else {
            fail_style()
        };
        let col = |i: usize| pad(&f[i], widths[i]);
        let line = fit(
            vec![
                (
                    0,
                    vec![
                        Span::styled(pad(label, 9), bold()),
                        Span::styled(col(0), pass_style),
                    ],
                ),
                (4, vec![Span::raw("  "), Span::raw(col(1))]),
                (1, vec![Span::raw("  "), Span::raw(col(2))]),
                (3, vec![Span::raw("  "), Span::raw(col(3))]),
                (5, vec![Span::raw("  "), Span::styled(col(4), dim())]),
                (2, vec![Span::raw("  "), Span::raw(col(5))]),
            ],
            width,
        );
        buf.set_line(area.x, area.y + 1 + to_u16(row), &line, area.width);
    }
}

/// The verdict, or progress while results are missing.
fn verdict(app: &App) -> Vec<Span<'static>> {
    let t = &app.totals;
    match t.verdict.as_str() {
        "" if app.rows.is_empty() => vec![Span::styled("no test cases", dim())],
        "" => vec![
            Span::styled(spinner(app.tick), Style::new().fg(Color::Yellow)),
            Span::raw(format!(
                " running… {}/{}",
                t.draft.runs.saturating_add(t.baseline.runs),
                app.rows.len().saturating_mul(2)
            )),
        ],
        "better" => vec![Span::styled(
            "better",
            pass_style().add_modifier(Modifier::BOLD),
        )],
        "worse" => vec![Span::styled("worse", fail_style())],
        other => vec![Span::styled(other.to_string(), bold())],
    }
}

/// The columns of one side: passed/total, rate, score, p50, cached, cost.
fn side_fields(s: &Summary) -> [String; 6] {
    let known = s.runs > 0;
    [
        format!("{}/{} passed", s.passed, s.runs),
        if known {
            format!("{:.0}%", s.pass_rate * 100.0)
        } else {
            "–".into()
        },
        if known {
            format!("score {:.2}", s.mean_score)
        } else {
            "score –".into()
        },
        if known {
            format!("p50 {}", fmt_ms(s.latency_p50_ms))
        } else {
            "p50 –".into()
        },
        format!("{} cached", s.cached),
        s.cost.to_string(),
    ]
}
