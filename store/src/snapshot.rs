//! Snapshots: their records, names, and how a SNAP argument finds one.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::list::ListRef;
use crate::oci::ImageSettings;
use crate::store::Store;
use crate::tree::Node;

pub const DEFAULT_NAME: &str = "default";
const RECORD_VERSION: u32 = 2;
const MIN_PREFIX: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub name: String,
    pub parent: Option<SnapshotId>,
    /// RFC 3339, UTC: when the ingest started.
    pub created: String,
    /// Length and sha256 (hex) of the tar stream.
    pub stream_len: u64,
    pub stream_sha256: String,
    pub members: u64,
    /// Bytes this snapshot added to the store (compressed, with record headers).
    pub added_bytes: u64,
    pub labels: BTreeMap<String, String>,
    /// The recipe: the list of pieces that replays the stream.
    pub root: ListRef,
    /// The tree's root node (None for snapshots made before trees existed).
    pub tree: Option<Node>,
    /// Image settings given when the snapshot was taken (the defaults of its images).
    pub image: ImageSettings,
    /// Whether the stream itself can serve as an OCI layer: every name extracts where the
    /// tree puts it, and none reads as a whiteout (false for snapshots older than this field).
    pub exact_layer: bool,
}

/// The versioned form written to packs, from which the index row can be rebuilt.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub v: u32,
    pub name: String,
    pub parent: Option<String>,
    pub created: String,
    pub stream_len: u64,
    pub stream_sha256: String,
    pub members: u64,
    pub added_bytes: u64,
    pub labels: BTreeMap<String, String>,
    /// Hex of the encoded piece list.
    pub root: String,
    /// Hex of the encoded root node of the tree (from version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
    #[serde(default, skip_serializing_if = "ImageSettings::is_empty")]
    pub image: ImageSettings,
    #[serde(default, skip_serializing_if = "is_false")]
    pub exact_layer: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Snapshot {
    /// The record's bytes and the id they give.
    pub(crate) fn to_record(&self) -> Vec<u8> {
        self.record_of_version(RECORD_VERSION)
    }

    fn record_of_version(&self, v: u32) -> Vec<u8> {
        let record = SnapshotRecord {
            v,
            name: self.name.clone(),
            parent: self.parent.map(|p| p.hex()),
            created: self.created.clone(),
            stream_len: self.stream_len,
            stream_sha256: self.stream_sha256.clone(),
            members: self.members,
            added_bytes: self.added_bytes,
            labels: self.labels.clone(),
            root: hex::encode(self.root.to_bytes()),
            tree: self.tree.as_ref().map(|t| hex::encode(t.to_bytes())),
            image: self.image.clone(),
            exact_layer: self.exact_layer,
        };
        serde_json::to_vec(&record).expect("records serialize")
    }

    /// Whether the snapshot's fields are the ones its id was computed from (the id is the
    /// hash of its record, `to_record`). Records before version 2 had no tree; those
    /// snapshots' rows have none either. An index row that fails this is damaged, or mixed
    /// with another row's through a damaged index.
    pub(crate) fn matches_id(&self) -> bool {
        self.record_for_id().is_some()
    }

    /// The record this snapshot's id is the hash of, written again from its fields (of the
    /// version it was written in), if they are the ones it was made from.
    pub(crate) fn record_for_id(&self) -> Option<Vec<u8>> {
        let hashes_to_id =
            |record: &Vec<u8>| SnapshotId(*blake3::hash(record).as_bytes()) == self.id;
        Some(self.to_record()).filter(hashes_to_id).or_else(|| {
            self.tree
                .is_none()
                .then(|| self.record_of_version(1))
                .filter(hashes_to_id)
        })
    }

    pub fn short_id(&self) -> String {
        self.id.short()
    }
}

/// A new lineage's NAME: lowercase letters and digits in runs joined by one `.`, one or two
/// `_`, or any number of `-` (an OCI repository name's component, since serve, pack and docker
/// archives name images after it; also a directory name in a mount), at most 128 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let chars_ok = name.chars().all(|c| alnum(c) || ".-_".contains(c));
    let ends_ok = name.starts_with(alnum) && name.ends_with(alnum);
    // The separators between the runs: each one '.', '_' or '__', or only '-'.
    let separators_ok = name
        .split(alnum)
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-'));
    if name.len() <= 128 && chars_ok && ends_ok && separators_ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid snapshot name {name:?}: use lowercase letters and digits, joined by one \
             '.', one or two '_' or any number of '-' (an OCI repository name), at most 128 \
             characters"
        )))
    }
}

/// A NAME to look snapshots up by: what `validate_name` allows, and what it allowed before it
/// followed OCI's rule (`[a-z0-9][a-z0-9._-]*`), so older lineages stay in reach.
pub fn validate_lookup_name(name: &str) -> Result<()> {
    let old_rule = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if old_rule {
        Ok(())
    } else {
        validate_name(name)
    }
}

const COLUMNS: &str = "id, name, parent, created, stream_len, stream_sha256, members, \
                       added_bytes, labels, root, tree, image, exact_layer";

fn from_row(r: &Row) -> rusqlite::Result<Result<Snapshot>> {
    let id: String = r.get(0)?;
    let parent: Option<String> = r.get(2)?;
    let labels: String = r.get(8)?;
    let root: Vec<u8> = r.get(9)?;
    let tree: Option<Vec<u8>> = r.get(10)?;
    let image: Option<String> = r.get(11)?;
    let exact_layer: bool = r.get(12)?;
    let snap = (|| {
        let bad = |what: &str| Error::corrupt(format!("snapshot {id}: malformed {what}"));
        Ok(Snapshot {
            id: SnapshotId::from_hex(&id).ok_or_else(|| bad("id"))?,
            name: r.get(1)?,
            parent: match parent {
                Some(p) => Some(SnapshotId::from_hex(&p).ok_or_else(|| bad("parent"))?),
                None => None,
            },
            created: r.get(3)?,
            stream_len: r.get::<_, i64>(4)? as u64,
            stream_sha256: r.get(5)?,
            members: r.get::<_, i64>(6)? as u64,
            added_bytes: r.get::<_, i64>(7)? as u64,
            labels: serde_json::from_str(&labels).map_err(|_| bad("labels"))?,
            root: ListRef::from_bytes(&root)?,
            tree: tree.map(|t| Node::from_bytes(&t)).transpose()?,
            image: match image {
                Some(i) => serde_json::from_str(&i).map_err(|_| bad("image settings"))?,
                None => ImageSettings::default(),
            },
            exact_layer,
        })
    })()
    .and_then(|s: Snapshot| {
        if s.matches_id() {
            Ok(s)
        } else {
            Err(Error::corrupt(format!(
                "snapshot {id}: its index row does not match its id (the index is damaged; \
                 `cellar repair-index` rebuilds it from the packs)"
            )))
        }
    });
    Ok(snap)
}

impl Store {
    fn query_snapshots(
        &self,
        sql_tail: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Snapshot>> {
        // Never through the indexes of `snapshots`: a damaged index entry would hand back
        // another snapshot's row, or mix its columns with that row's. The table is small, and
        // each row is checked against its id (`from_row`).
        self.query_table("snapshots NOT INDEXED", sql_tail, args)
    }

    /// Snapshot rows of `table`: `snapshots`, or `pins` (the same columns).
    fn query_table(
        &self,
        table: &str,
        sql_tail: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Snapshot>> {
        let db = self.db();
        let mut stmt = db
            .conn()
            .prepare_cached(&format!("SELECT {COLUMNS} FROM {table} {sql_tail}"))?;
        let rows = stmt.query_map(args, from_row)?;
        rows.map(|r| r?).collect()
    }

    /// Snapshots in commit order, optionally of one name.
    pub fn list(&self, name: Option<&str>) -> Result<Vec<Snapshot>> {
        match name {
            Some(n) => self.query_snapshots("WHERE name = ?1 ORDER BY seq", &[&n]),
            None => self.query_snapshots("ORDER BY seq", &[]),
        }
    }

    /// The `back`-th snapshot before the latest of `name` (0: the latest).
    pub fn latest(&self, name: &str, back: u64) -> Result<Option<Snapshot>> {
        // SQLite reads a negative OFFSET as 0, which would make a huge `back` the latest.
        let Ok(back) = i64::try_from(back) else {
            return Ok(None);
        };
        Ok(self
            .query_snapshots(
                "WHERE name = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                &[&name, &back],
            )?
            .pop())
    }

    /// The snapshot with this id; once forgotten, as long as a reader's lease pins it.
    pub fn snapshot_by_id(&self, id: &SnapshotId) -> Result<Snapshot> {
        let hex = id.hex();
        match self.query_snapshots("WHERE id = ?1", &[&hex])?.pop() {
            Some(s) => Ok(s),
            None => self
                .query_table("pins", "WHERE id = ?1 LIMIT 1", &[&hex])?
                .pop()
                .ok_or_else(|| Error::NotFound(format!("snapshot {} is gone", id.short()))),
        }
    }

    /// Forgotten snapshots that readers pin (each once) whose commit came after `seq`: what
    /// gc must keep beyond the snapshots still listed. Pins of the leases in
    /// `temp.gc_dead_leases` (gc's dry run: readers that are gone) keep nothing.
    pub(crate) fn pinned_after(&self, seq: i64) -> Result<Vec<Snapshot>> {
        self.query_table(
            "pins",
            "WHERE seq > ?1 AND id NOT IN (SELECT id FROM snapshots)
               AND lease NOT IN (SELECT id FROM temp.gc_dead_leases)
             GROUP BY id",
            &[&seq],
        )
    }

    /// In `tx`, pin `id` for the lease row `lease` (a copy of its row); false if it has been
    /// forgotten.
    pub(crate) fn pin_in(tx: &rusqlite::Transaction, lease: i64, id: &SnapshotId) -> Result<bool> {
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO pins (lease, seq, {COLUMNS})
                 SELECT ?1, seq, {COLUMNS} FROM snapshots NOT INDEXED WHERE id = ?2"
            ),
            rusqlite::params![lease, id.hex()],
        )?;
        Ok(tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM pins WHERE lease = ?1 AND id = ?2)",
            rusqlite::params![lease, id.hex()],
            |r| r.get(0),
        )?)
    }

    /// Resolve a SNAP argument: NAME (its latest), NAME~N, a full id, or a unique id prefix of
    /// at least 4 hex characters. An exact name wins over an id prefix.
    pub fn resolve(&self, spec: &str) -> Result<Snapshot> {
        if let Some(s) = self.latest(spec, 0)? {
            return Ok(s);
        }
        if let Some((name, n)) = spec.rsplit_once('~') {
            let back: u64 = n.parse().map_err(|_| {
                Error::InvalidArgument(format!("{spec:?}: expected NAME~N with a number N"))
            })?;
            return self.latest(name, back)?.ok_or_else(|| {
                let count = self.list(Some(name)).map(|l| l.len()).unwrap_or(0);
                Error::NotFound(match count {
                    0 => format!("no snapshots named {name:?}"),
                    c => format!("{spec}: {name:?} has only {c} snapshot(s)"),
                })
            });
        }
        let prefix = spec.to_ascii_lowercase();
        let hex = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex || prefix.len() < MIN_PREFIX {
            // The hint only helps with what would be an id prefix if it were longer: for
            // anything else ("nosuch", "e0af8573abadXX") it is noise.
            let hint = if hex {
                format!(" (an id prefix needs at least {MIN_PREFIX} hex characters)")
            } else {
                String::new()
            };
            return Err(Error::NotFound(format!("no snapshot named {spec:?}{hint}")));
        }
        // The candidates by id and name only: the one chosen is then read whole (and checked
        // against its id), a damaged row among the others does not hide the ambiguity.
        let found: Vec<(String, String)> = {
            let db = self.db();
            let mut stmt = db.conn().prepare_cached(
                "SELECT id, name FROM snapshots NOT INDEXED
                 WHERE id >= ?1 AND id < ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map([&prefix, &format!("{prefix}g")], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        match found.as_slice() {
            [] => Err(Error::NotFound(format!(
                "no snapshot named {spec:?} or with an id starting {prefix}"
            ))),
            [(id, _)] => self
                .query_snapshots("WHERE id = ?1", &[id])?
                .pop()
                .ok_or_else(|| Error::NotFound(format!("snapshot {id} is gone"))),
            _ => Err(Error::NotFound(format!(
                "id prefix {prefix} is ambiguous; it matches: {}",
                found
                    .iter()
                    .map(|(id, name)| format!("{} ({name})", &id[..id.len().min(12)]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub(crate) fn insert_snapshot(tx: &rusqlite::Transaction, s: &Snapshot) -> Result<()> {
        tx.execute(
            "INSERT INTO snapshots (id, name, parent, created, stream_len, stream_sha256, members,
                                    added_bytes, labels, root, tree, image, exact_layer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                s.id.hex(),
                s.name,
                s.parent.map(|p| p.hex()),
                s.created,
                s.stream_len as i64,
                s.stream_sha256,
                s.members as i64,
                s.added_bytes as i64,
                serde_json::to_string(&s.labels).expect("labels serialize"),
                s.root.to_bytes(),
                s.tree.as_ref().map(|t| t.to_bytes()),
                (!s.image.is_empty())
                    .then(|| serde_json::to_string(&s.image).expect("settings serialize")),
                s.exact_layer,
            ],
        )?;
        Ok(())
    }

    pub(crate) fn latest_id_in(
        tx: &rusqlite::Transaction,
        name: &str,
    ) -> Result<Option<SnapshotId>> {
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM snapshots WHERE name = ?1 ORDER BY seq DESC LIMIT 1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(id.and_then(|i| SnapshotId::from_hex(&i)))
    }
}

#[cfg(test)]
impl Snapshot {
    /// A record with nothing in it but its id (`n` in every byte), lineage and time, for
    /// tests of code that orders or selects snapshots by those.
    pub(crate) fn bare(n: u8, name: &str, created: &str) -> Snapshot {
        Snapshot {
            id: SnapshotId([n; 32]),
            name: name.into(),
            parent: None,
            created: created.into(),
            stream_len: 0,
            stream_sha256: String::new(),
            members: 0,
            added_bytes: 0,
            labels: Default::default(),
            root: ListRef::Inline(vec![]),
            tree: None,
            image: Default::default(),
            exact_layer: false,
        }
    }
}
