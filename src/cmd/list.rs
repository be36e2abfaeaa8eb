//! `cellar list` and `cellar show`.

use cellar_store::Store;

use crate::cli::{ListArgs, ShowArgs};
use crate::output::{errln, human_bytes, outln, print_json, SnapshotJson};

pub fn list(store: &Store, args: ListArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.name {
        cellar_store::validate_lookup_name(name)?;
    }
    let snaps = store.list(args.name.as_deref())?;
    if args.json {
        return print_json(&snaps.iter().map(SnapshotJson::from).collect::<Vec<_>>());
    }
    if snaps.is_empty() {
        errln!("cellar: no snapshots");
        return Ok(());
    }
    let width = snaps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    outln!(
        "{:<12}  {:<width$}  {:<19}  {:>10}  {:>10}",
        "ID",
        "NAME",
        "CREATED",
        "SIZE",
        "ADDED"
    );
    for s in &snaps {
        outln!(
            "{:<12}  {:<width$}  {:<19}  {:>10}  {:>10}",
            s.short_id(),
            s.name,
            // "2026-11-29T09:34:21.624Z" -> "2026-11-29 09:34:21" (UTC)
            s.created.get(..19).unwrap_or(&s.created).replace('T', " "),
            human_bytes(s.stream_len),
            human_bytes(s.added_bytes)
        );
    }
    Ok(())
}

pub fn show(store: &Store, args: ShowArgs) -> anyhow::Result<()> {
    let s = store.resolve(&args.snap)?;
    if args.json {
        return print_json(&SnapshotJson::from(&s));
    }
    outln!("id:       {}", s.id);
    outln!("name:     {}", s.name);
    outln!(
        "parent:   {}",
        s.parent.map(|p| p.hex()).unwrap_or_else(|| "-".into())
    );
    outln!("created:  {}", s.created);
    outln!("size:     {} ({})", s.stream_len, human_bytes(s.stream_len));
    outln!(
        "added:    {} ({})",
        s.added_bytes,
        human_bytes(s.added_bytes)
    );
    outln!("members:  {}", s.members);
    outln!("sha256:   {}", s.stream_sha256);
    // Space separates labels, so a key or value with space, a quote or a control character
    // in it (or an empty value) is quoted, with Rust's escapes.
    let quoted = |t: &str| {
        if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"') {
            format!("{t:?}")
        } else {
            t.to_string()
        }
    };
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", quoted(k), quoted(v)))
        .collect();
    outln!(
        "labels:   {}",
        if labels.is_empty() {
            "-".into()
        } else {
            labels.join(" ")
        }
    );
    Ok(())
}
