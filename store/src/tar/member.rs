//! One member as the reader hands it out: the raw bytes before its payload, and what its
//! headers say.

use super::pax::{self, PaxRecord};
use crate::error::path_text;

/// What one member's headers say.
#[derive(Debug, Clone, Default)]
pub struct Member {
    /// Raw bytes from the end of the previous payload to the start of this one's.
    pub head: Vec<u8>,
    /// Stream offset of the member's main header block.
    pub offset: u64,
    pub typeflag: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u64,
    /// Signed, as GNU tar reads them: a negative owner is a warning, not a broken stream.
    pub uid: i64,
    pub gid: i64,
    pub mtime: i64,
    pub devmajor: u64,
    pub devminor: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// Bytes of payload that follow the headers in the stream.
    pub payload_len: u64,
    /// The PAX records that apply to this member: the last global header's (`g`, see
    /// [`super::reader::global_applies`]) first, then its local ones (`x`), so a local record overrides a
    /// global one of the same key when looked up with `pax::lookup`.
    pub pax: Vec<PaxRecord>,
    /// How many of `pax` came from a global header.
    pub global_records: usize,
    /// Old GNU sparse members: the expanded size and the map (offset, length) of data.
    pub gnu_realsize: Option<u64>,
    pub gnu_sparse: Vec<(u64, u64)>,
    /// A GNU long name (or link) header and a PAX `path` (or `linkpath`) both name it.
    /// GNU tar and bsdtar take the PAX one, Go's archive/tar the GNU one.
    pub names_twice: bool,
}

impl Member {
    /// The path the member stands for: a PAX sparse member's own (`GNU.sparse.name`), not
    /// the placeholder its header carries (`./GNUSparseFile.123/name`).
    pub fn real_path(&self) -> &[u8] {
        pax::lookup(&self.pax, "GNU.sparse.name").unwrap_or(&self.path)
    }

    /// [`Member::real_path`] for a message: lossy UTF-8, control characters escaped.
    pub fn display_path(&self) -> String {
        path_text(self.real_path())
    }
}
