//! `flowrun check`: validate the whole project, reporting every problem, calling no model.

use std::path::Path;

use crate::exit::Exit;
use crate::style;

pub fn check(start: &Path) -> Exit {
    let local = match super::load_project(start) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    let p = &local.project;
    let plural = |n: usize, word: &str| {
        let suffix = match (n, word.ends_with('s')) {
            (1, _) => "",
            (_, true) => "es",
            _ => "s",
        };
        format!("{n} {word}{suffix}")
    };
    let color = style::color_stderr();
    eprintln!(
        "{} {}, {}, {}: no problems",
        style::paint(color, style::GREEN, "ok:"),
        plural(p.prompts.len(), "prompt"),
        plural(p.flows.len(), "flow"),
        plural(p.config.models.len(), "model alias"),
    );
    Exit::Success
}
