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
    /// How much of the file has been handed to writeback (see [`WRITEBACK_STEP`]).
    kicked: u64,
}

/// Writeback of a pack's data is started every this many bytes, so the fsync that seals it
/// waits for the last few MiB only, not for all 32 MiB: that fsync stops the writer thread,
/// and behind it the compression workers, and the last one is on the commit's critical path.
const WRITEBACK_STEP: u64 = 4 << 20;

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
            kicked: 0,
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
        if self.len - self.kicked >= WRITEBACK_STEP {
            self.start_writeback();
        }
        Ok(())
    }

    /// Start writing back what was appended since the last call, without waiting for it.
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a descriptor this writer owns. It only asks the kernel to
        // start writeback early; an error it would report, fsync reports at the seal.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.kicked as i64,
                (self.len - self.kicked) as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.kicked = self.len;
    }

    /// The pack as it will be once sealed (its name is the hash of what is written so far),
    /// and the file it is written in until then.
    pub fn pending(&self) -> Result<(SealedPack, File)> {
        let file = File::open(&self.tmp).at(&self.tmp)?;
        let id = PackId(*self.hasher.finalize().as_bytes());
        Ok((SealedPack { id, size: self.len }, file))
    }

    /// Where the pack is written until it is sealed.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Make the pack durable under its final name.
    pub fn seal(self) -> Result<SealedPack> {
        self.file.sync_all().at(&self.tmp)?;
        let id = PackId(*self.hasher.finalize().as_bytes());
        let path = layout::pack_path(&self.root, &id);
        let dir = path.parent().expect("pack dir");
        // gc removes fan-out directories it finds empty, so the one made here can go before
        // the rename lands in it: make it again then (a rename into a directory and its
        // removal never both succeed).
        let mut tries = 0;
        loop {
            if !dir.exists() {
                fs::create_dir_all(dir).at(dir)?;
                layout::sync_dir(dir.parent().expect("packs dir"))?;
            }
            match fs::rename(&self.tmp, &path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
                done => break done.at(&path)?,
            }
        }
        layout::sync_dir(dir)?;
        Ok(SealedPack { id, size: self.len })
    }

    /// Throw an unsealed pack away.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}
