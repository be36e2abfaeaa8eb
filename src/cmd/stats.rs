//! `cellar stats`.

use cellar_store::Store;

use crate::cli::JsonArg;
use crate::output::{human_bytes, outln, print_json, StatsJson};

pub fn run(store: &Store, args: JsonArg) -> anyhow::Result<()> {
    let s = store.stats()?;
    if args.json {
        return print_json(&StatsJson::from(&s));
    }
    outln!("snapshots:      {}", s.snapshots);
    outln!(
        "logical bytes:  {} ({})",
        s.logical_bytes,
        human_bytes(s.logical_bytes)
    );
    outln!(
        "stored bytes:   {} ({})",
        s.stored_bytes,
        human_bytes(s.stored_bytes)
    );
    outln!("chunks:         {}", s.chunks);
    outln!("packs:          {}", s.packs);
    outln!("dedup ratio:    {:.2}x", s.dedup_ratio());
    Ok(())
}
