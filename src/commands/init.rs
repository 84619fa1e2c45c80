//! `flowrun init`: scaffold a project that runs offline on the mock provider, from the
//! `examples/quickstart` project shipped in the repository.

use std::path::Path;

use crate::cli::InitArgs;
use crate::exit::Exit;
use crate::style;

/// The quickstart project's files, embedded at build time.
const FILES: [(&str, &str); 9] = [
    (
        "flowrun.yaml",
        include_str!("../../examples/quickstart/flowrun.yaml"),
    ),
    (
        "prompts/classify.yaml",
        include_str!("../../examples/quickstart/prompts/classify.yaml"),
    ),
    (
        "prompts/reply.yaml",
        include_str!("../../examples/quickstart/prompts/reply.yaml"),
    ),
    (
        "prompts/summarize.yaml",
        include_str!("../../examples/quickstart/prompts/summarize.yaml"),
    ),
    (
        "flows/triage.yaml",
        include_str!("../../examples/quickstart/flows/triage.yaml"),
    ),
    (
        "partials/tone.j2",
        include_str!("../../examples/quickstart/partials/tone.j2"),
    ),
    (
        "tests/triage.test.yaml",
        include_str!("../../examples/quickstart/tests/triage.test.yaml"),
    ),
    (
        "tests/summarize.test.yaml",
        include_str!("../../examples/quickstart/tests/summarize.test.yaml"),
    ),
    (
        "data/tickets.jsonl",
        include_str!("../../examples/quickstart/data/tickets.jsonl"),
    ),
];

const GITIGNORE: &str = "# flowrun's local history and cache\n.flowrun/\n.env\n";

pub fn init(start: &Path, args: &InitArgs) -> Exit {
    let dir = start.join(&args.dir);
    if dir.join("flowrun.yaml").exists() {
        super::error(
            &format!("{} already has a flowrun.yaml", dir.display()),
            Some("edit it, or choose another directory"),
        );
        return Exit::Usage;
    }
    if let Err(e) = scaffold(&dir) {
        super::error(
            &format!("cannot create the project in {}: {e}", dir.display()),
            None,
        );
        return Exit::Failure;
    }
    let color = style::color_stderr();
    eprintln!(
        "{} created a flowrun project in {}",
        style::paint(color, style::GREEN, "ok:"),
        dir.display()
    );
    eprintln!("next: flowrun run triage --input ticket=\"I was charged twice\"");
    Exit::Success
}

fn scaffold(dir: &Path) -> std::io::Result<()> {
    for (rel, text) in FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    let gitignore = dir.join(".gitignore");
    let existing = std::fs::read_to_string(&gitignore).unwrap_or_default();
    if !existing.lines().any(|l| l.trim() == ".flowrun/") {
        std::fs::write(&gitignore, existing + GITIGNORE)?;
    }
    super::schema::write_schemas(&dir.join(super::schema::SCHEMA_DIR))?;
    Ok(())
}
