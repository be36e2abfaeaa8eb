//! `cellar stats`.

use cellar_store::Store;

use crate::cli::JsonArg;
use crate::output::{human_bytes, print_json, StatsJson};

pub fn run(store: &Store, args: JsonArg) -> anyhow::Result<()> {
    let s = store.stats()?;
    if args.json {
        return print_json(&StatsJson::from(&s));
    }
    println!("snapshots:      {}", s.snapshots);
    println!(
        "logical bytes:  {} ({})",
        s.logical_bytes,
        human_bytes(s.logical_bytes)
    );
    println!(
        "stored bytes:   {} ({})",
        s.stored_bytes,
        human_bytes(s.stored_bytes)
    );
    println!("chunks:         {}", s.chunks);
    println!("packs:          {}", s.packs);
    println!("dedup ratio:    {:.2}x", s.dedup_ratio());
    Ok(())
}
