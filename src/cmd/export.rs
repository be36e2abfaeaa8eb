//! `cellar export`: the exact ingested stream, to stdout or a file.

use std::io::{BufWriter, IsTerminal, Write};

use anyhow::Context;
use cellar_store::Store;

use crate::cli::{ExportArgs, UsageError};

pub fn run(store: &Store, args: ExportArgs) -> anyhow::Result<()> {
    let snap = store.resolve(&args.snap)?;
    match &args.output {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(UsageError(
                    "refusing to write a tar stream to a terminal; redirect stdout or use -o FILE"
                        .into(),
                )
                .into());
            }
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            store.export(&snap, &mut out)?;
        }
        Some(path) => {
            // Written beside the target and renamed into place, so a failed export leaves
            // no partial file behind.
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(".".as_ref());
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
            store.export(&snap, &mut out)?;
            out.flush()?;
            drop(out);
            tmp.as_file().sync_all()?;
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
