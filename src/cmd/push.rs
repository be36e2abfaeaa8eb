//! `cellar push`: lands in the next commit.

use cellar_store::Store;

use crate::cli::PushArgs;

pub fn run(_store: &Store, _args: PushArgs) -> anyhow::Result<()> {
    anyhow::bail!("cellar push is not in this build")
}
