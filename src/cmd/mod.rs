//! One module per command; each takes its parsed arguments and the store location.

mod export;
mod gc;
mod list;
mod mount;
mod pack;
mod prune;
mod push;
mod restore;
mod serve;
mod snapshot;
mod stats;
mod tree;
mod verify;

use std::path::PathBuf;

use anyhow::Context;
use cellar_store::Store;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let root = match cli.store {
        Some(dir) => dir,
        None => default_store()?,
    };
    match cli.command {
        Command::Snapshot(args) => snapshot::run(&root, args),
        Command::List(args) => list::list(&open(&root)?, args),
        Command::Show(args) => list::show(&open(&root)?, args),
        Command::Export(args) => export::run(&open(&root)?, args),
        Command::Stats(args) => stats::run(&open(&root)?, args),
        Command::Ls(args) => tree::ls(&open(&root)?, args),
        Command::Cat(args) => tree::cat(&open(&root)?, args),
        Command::Diff(args) => tree::diff(&open(&root)?, args),
        Command::Mount(args) => mount::run(&root, open(&root)?, args),
        Command::Restore(args) => restore::run(&open(&root)?, args),
        Command::Rm(args) => prune::rm(&open(&root)?, args),
        Command::Prune(args) => prune::prune(&open(&root)?, args),
        Command::Verify(args) => verify::verify(&root, args),
        Command::RepairIndex(args) => verify::repair_index(&root, args),
        Command::Gc(args) => gc::run(&open(&root)?, args),
        Command::Serve(args) => serve::run(open(&root)?, args),
        Command::Push(args) => push::run(&open(&root)?, args),
        Command::Pack(args) => pack::run(open(&root)?, args),
    }
}

fn open(root: &std::path::Path) -> anyhow::Result<Store> {
    match Store::open(root) {
        Err(e @ cellar_store::Error::Db(_)) => Err(anyhow::Error::from(e).context(format!(
            "cannot open the index of {} (if it is damaged, `cellar repair-index` rebuilds it \
             from the packs)",
            root.display()
        ))),
        other => Ok(other?),
    }
}

/// `$XDG_DATA_HOME/cellar`, else `~/.local/share/cellar`.
fn default_store() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("cellar"));
    }
    let home = std::env::var_os("HOME").context("neither --store, CELLAR_STORE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/cellar"))
}
