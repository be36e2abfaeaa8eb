//! Writing packs: append records to a temporary file, then seal it (fsync, rename to its
//! content hash, fsync the directory) before any index row may name it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{pack_header, RecordHeader};
use crate::error::{IoContext, Result};
use crate::ids::PackId;
use crate::layout;

/// A pack made durable under its final name. What it holds is read back from the file when
/// it is indexed, so writers keep no per-record state.
#[derive(Debug)]
pub struct SealedPack {
    pub id: PackId,
    pub size: u64,
}

pub struct PackWriter {
    root: PathBuf,
    tmp: PathBuf,
    file: File,
    hasher: blake3::Hasher,
    len: u64,
    records: usize,
}

impl PackWriter {
    pub fn create(root: &Path) -> Result<Self> {
        let tmp = layout::new_temp_path(root, "pack");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at(&tmp)?;
        let header = pack_header(layout::nonce());
        file.write_all(&header).at(&tmp)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&header);
        Ok(PackWriter {
            root: root.to_path_buf(),
            tmp,
            file,
            hasher,
            len: header.len() as u64,
            records: 0,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn append(&mut self, header: &RecordHeader, payload: &[u8]) -> Result<()> {
        debug_assert_eq!(header.stored_len as usize, payload.len());
        let h = header.encode();
        self.file.write_all(&h).at(&self.tmp)?;
        self.file.write_all(payload).at(&self.tmp)?;
        self.hasher.update(&h);
        self.hasher.update(payload);
        self.records += 1;
        self.len += (h.len() + payload.len()) as u64;
        Ok(())
    }

    /// Flush written data to disk without sealing (so a later seal has little left to sync).
    pub fn sync_data(&self) -> Result<()> {
        self.file.sync_data().at(&self.tmp)
    }

    /// Make the pack durable under its final name.
    pub fn seal(self) -> Result<SealedPack> {
        self.file.sync_all().at(&self.tmp)?;
        let id = PackId(*self.hasher.finalize().as_bytes());
        let path = layout::pack_path(&self.root, &id);
        let dir = path.parent().expect("pack dir");
        if !dir.exists() {
            fs::create_dir_all(dir).at(dir)?;
            layout::sync_dir(dir.parent().expect("packs dir"))?;
        }
        fs::rename(&self.tmp, &path).at(&path)?;
        layout::sync_dir(dir)?;
        Ok(SealedPack { id, size: self.len })
    }

    /// Throw an unsealed pack away.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}
