//! Whole-store figures.

use crate::error::Result;
use crate::store::Store;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub snapshots: u64,
    /// Sum of the snapshots' stream lengths.
    pub logical_bytes: u64,
    /// Bytes in pack files.
    pub stored_bytes: u64,
    pub chunks: u64,
    pub packs: u64,
}

impl Stats {
    pub fn dedup_ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            0.0
        } else {
            self.logical_bytes as f64 / self.stored_bytes as f64
        }
    }
}

impl Store {
    pub fn stats(&self) -> Result<Stats> {
        let db = self.db();
        let c = db.conn();
        let count =
            |sql: &str| -> Result<u64> { Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
        Ok(Stats {
            snapshots: count("SELECT COUNT(*) FROM snapshots")?,
            logical_bytes: count("SELECT COALESCE(SUM(stream_len), 0) FROM snapshots")?,
            stored_bytes: count("SELECT COALESCE(SUM(size), 0) FROM packs")?,
            chunks: count("SELECT COUNT(*) FROM chunks")?,
            packs: count("SELECT COUNT(*) FROM packs")?,
        })
    }
}
