//! Terminal events to [`Action`]s: the key map of `flowrun dev`. Pure: it reads the [`App`]
//! (the filter line takes typed characters, the detail view scrolls) and changes nothing.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::app::{Action, App, View};

/// What a terminal event asks of the loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Apply this action.
    Action(Action),
    /// Draw again (the terminal was resized).
    Redraw,
    /// Nothing to do.
    Ignore,
}

/// Maps one terminal event.
pub fn input_of(app: &App, event: &Event) -> Input {
    match event {
        Event::Key(key) => action_of(app, key).map_or(Input::Ignore, Input::Action),
        Event::Resize(..) => Input::Redraw,
        _ => Input::Ignore,
    }
}

/// The action of a key, if it has one.
pub fn action_of(app: &App, key: &KeyEvent) -> Option<Action> {
    // Key releases (reported by some terminals) are not presses.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
        return Some(Action::Quit);
    }
    if app.editing_filter {
        return match key.code {
            KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                Some(Action::FilterInput(c))
            }
            KeyCode::Backspace => Some(Action::FilterBackspace),
            KeyCode::Enter => Some(Action::Open),
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Up => Some(Action::Up),
            KeyCode::Down => Some(Action::Down),
            _ => None,
        };
    }
    if ctrl {
        return None;
    }
    let detail = app.view == View::Detail;
    let action = match key.code {
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::PageUp if detail => Action::ScrollUp,
        KeyCode::PageDown if detail => Action::ScrollDown,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Char('g') | KeyCode::Home => Action::Top,
        KeyCode::Char('G') | KeyCode::End => Action::Bottom,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('r') => Action::Rerun,
        KeyCode::Char('R') => Action::RerunAll,
        KeyCode::Char('b') => Action::NextBaseline,
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Char('f') => Action::ToggleInteresting,
        KeyCode::Char('d') => Action::ToggleDiff,
        KeyCode::Char('s') => Action::Save,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    };
    Some(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{CaseId, CaseRow};

    fn app() -> App {
        let rows = (0..3)
            .map(|i| {
                let id = CaseId {
                    file: "tests/a.test.yaml".into(),
                    index: i,
                };
                CaseRow::new(id, format!("case {i}"), "prompt/p")
            })
            .collect();
        App::new(rows, vec!["git:".into()], "git:main".into())
    }

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn act(app: &App, event: Event) -> Option<Action> {
        match input_of(app, &event) {
            Input::Action(a) => Some(a),
            _ => None,
        }
    }

    #[test]
    fn list_keys() {
        let a = app();
        let cases = [
            (KeyCode::Char('j'), Action::Down),
            (KeyCode::Down, Action::Down),
            (KeyCode::Char('k'), Action::Up),
            (KeyCode::Up, Action::Up),
            (KeyCode::PageUp, Action::PageUp),
            (KeyCode::PageDown, Action::PageDown),
            (KeyCode::Char('g'), Action::Top),
            (KeyCode::Char('G'), Action::Bottom),
            (KeyCode::Enter, Action::Open),
            (KeyCode::Esc, Action::Back),
            (KeyCode::Char('r'), Action::Rerun),
            (KeyCode::Char('R'), Action::RerunAll),
            (KeyCode::Char('b'), Action::NextBaseline),
            (KeyCode::Char('/'), Action::StartFilter),
            (KeyCode::Char('f'), Action::ToggleInteresting),
            (KeyCode::Char('d'), Action::ToggleDiff),
            (KeyCode::Char('s'), Action::Save),
            (KeyCode::Char('?'), Action::Help),
            (KeyCode::Char('q'), Action::Quit),
        ];
        for (code, want) in cases {
            assert_eq!(act(&a, key(code)), Some(want), "{code:?}");
        }
        assert_eq!(act(&a, key(KeyCode::Char('x'))), None);
        let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(act(&a, ctrl_c), Some(Action::Quit));
        let ctrl_j = Event::Key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::CONTROL));
        assert_eq!(act(&a, ctrl_j), None);
    }

    #[test]
    fn pages_scroll_the_detail_view() {
        let mut a = app();
        a.view = View::Detail;
        assert_eq!(act(&a, key(KeyCode::PageDown)), Some(Action::ScrollDown));
        assert_eq!(act(&a, key(KeyCode::PageUp)), Some(Action::ScrollUp));
        assert_eq!(act(&a, key(KeyCode::Char('j'))), Some(Action::Down));
    }

    #[test]
    fn the_filter_line_takes_characters() {
        let mut a = app();
        a.editing_filter = true;
        assert_eq!(
            act(&a, key(KeyCode::Char('q'))),
            Some(Action::FilterInput('q'))
        );
        assert_eq!(
            act(&a, key(KeyCode::Char('/'))),
            Some(Action::FilterInput('/'))
        );
        assert_eq!(
            act(&a, key(KeyCode::Backspace)),
            Some(Action::FilterBackspace)
        );
        assert_eq!(act(&a, key(KeyCode::Enter)), Some(Action::Open));
        assert_eq!(act(&a, key(KeyCode::Esc)), Some(Action::Back));
        let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(act(&a, ctrl_c), Some(Action::Quit), "Ctrl-C always quits");
    }

    #[test]
    fn releases_are_ignored_and_resizes_redraw() {
        let a = app();
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(input_of(&a, &Event::Key(release)), Input::Ignore);
        assert_eq!(input_of(&a, &Event::Resize(80, 24)), Input::Redraw);
        assert_eq!(input_of(&a, &Event::FocusGained), Input::Ignore);
    }
}
