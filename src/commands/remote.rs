//! `flowrun remote`: named servers, and how every command that talks to a server finds one
//! (`--remote NAME|URL`) and its API key (the variable the remote names).

use std::path::Path;

use flowrun_client::{Client, ClientError};
use flowrun_local::find_root;
use flowrun_local::remotes::{Remotes, Target};

use crate::cli::{RemoteCmd, RemoteSub};
use crate::exit::Exit;

fn root_or_usage(start: &Path) -> Result<std::path::PathBuf, Exit> {
    find_root(start).ok_or_else(|| {
        super::error(
            "no flowrun project here: remotes are kept per project",
            Some("run it inside a project (or `flowrun init` one)"),
        );
        Exit::Usage
    })
}

fn load(root: &Path) -> Result<Remotes, Exit> {
    Remotes::load(root).map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Usage
    })
}

pub fn remote(start: &Path, cmd: &RemoteCmd) -> Exit {
    let result = (|| {
        let root = root_or_usage(start)?;
        let mut remotes = load(&root)?;
        match &cmd.sub {
            Some(RemoteSub::Add(a)) => {
                remotes.add(&a.name, &a.url, &a.token_env).map_err(|e| {
                    super::error(&e.to_string(), None);
                    Exit::Usage
                })?;
                save(&root, &remotes)?;
                eprintln!(
                    "added remote `{}` ({}); its API key is read from ${}",
                    a.name, remotes.remotes[&a.name].url, a.token_env
                );
            }
            Some(RemoteSub::Remove(a)) => {
                if !remotes.remove(&a.name) {
                    super::error(&format!("no remote named `{}`", a.name), None);
                    return Err(Exit::Usage);
                }
                save(&root, &remotes)?;
                eprintln!("removed remote `{}`", a.name);
            }
            Some(RemoteSub::List) | None => {
                if remotes.remotes.is_empty() {
                    eprintln!("no remotes: `flowrun remote add NAME URL --token-env VAR` adds one");
                }
                for (name, r) in &remotes.remotes {
                    println!("{name}\t{}\t${}", r.url, r.token_env);
                }
            }
        }
        Ok(Exit::Success)
    })();
    match result {
        Ok(e) | Err(e) => e,
    }
}

fn save(root: &Path, remotes: &Remotes) -> Result<(), Exit> {
    remotes.save(root).map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Failure
    })
}

/// The server `--remote` names (a remote of the project around `start`, or a URL) and a
/// client with its API key.
pub fn connect(start: &Path, given: Option<&str>) -> Result<(Target, Client), Exit> {
    let remotes = match find_root(start) {
        Some(root) => load(&root)?,
        None => Remotes::default(),
    };
    let target = remotes.resolve(given).map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Usage
    })?;
    let token = std::env::var(&target.token_env)
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() {
        super::error(
            &format!(
                "`{}` is not set: it holds the API key for {}",
                target.token_env, target.label
            ),
            Some(
                "create a key on the server with `flowrun serve keys create --env ENV --role deploy` and export it",
            ),
        );
        return Err(Exit::Usage);
    }
    let client = Client::new(target.url.clone(), token).map_err(|e| fail(&e))?;
    Ok((target, client))
}

/// Prints a client error; exit 1.
pub fn fail(e: &ClientError) -> Exit {
    super::error(&e.to_string(), None);
    Exit::Failure
}

/// Runs a client call to completion on a small runtime of its own.
pub fn block_on<T>(f: impl Future<Output = Result<T, ClientError>>) -> Result<T, Exit> {
    let rt = super::runtime(0)?;
    rt.block_on(f).map_err(|e| fail(&e))
}
