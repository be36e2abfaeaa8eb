//! How reports look: JSON shapes (a contract: see the README) and human formatting.

use std::collections::BTreeMap;

use cellar_store::{Snapshot, Stats};
use serde::Serialize;

#[derive(Serialize)]
pub struct SnapshotJson<'a> {
    pub id: String,
    pub short_id: String,
    pub name: &'a str,
    pub parent: Option<String>,
    pub created: &'a str,
    /// Length of the tar stream in bytes.
    pub size: u64,
    pub added_bytes: u64,
    pub members: u64,
    pub sha256: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a Snapshot> for SnapshotJson<'a> {
    fn from(s: &'a Snapshot) -> Self {
        SnapshotJson {
            id: s.id.hex(),
            short_id: s.short_id(),
            name: &s.name,
            parent: s.parent.map(|p| p.hex()),
            created: &s.created,
            size: s.stream_len,
            added_bytes: s.added_bytes,
            members: s.members,
            sha256: &s.stream_sha256,
            labels: &s.labels,
        }
    }
}

#[derive(Serialize)]
pub struct StatsJson {
    pub snapshots: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub packs: u64,
    pub dedup_ratio: f64,
}

impl From<&Stats> for StatsJson {
    fn from(s: &Stats) -> Self {
        StatsJson {
            snapshots: s.snapshots,
            logical_bytes: s.logical_bytes,
            stored_bytes: s.stored_bytes,
            chunks: s.chunks,
            packs: s.packs,
            dedup_ratio: (s.dedup_ratio() * 1000.0).round() / 1000.0,
        }
    }
}

pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
