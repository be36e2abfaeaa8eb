//! Regular files: data streamed from the store through the restore's one buffer, only the
//! data segments of a sparse file (so holes stay holes). A file whose data cannot be read or
//! written in full is removed again.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use super::{fs, Restorer};
use crate::error::{Error, Result};
use crate::tree::Node;

impl Restorer<'_, '_> {
    /// A regular file: its data (only the data segments of a sparse file, then its length, so
    /// holes stay holes), then its attributes. False if something was in the way.
    pub(super) fn file(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        rel: &[u8],
        node: &Node,
    ) -> Result<bool> {
        let Some(fd) = self.create(parent, name, rel, || fs::create_file(parent, name))? else {
            return Ok(false);
        };
        let file = File::from(fd);
        match self.write_data(&file, rel, node) {
            Ok(n) => self.report.bytes += n,
            Err(e) => {
                // Never leave a file with wrong or missing bytes behind.
                drop(file);
                let _ = fs::unlinkat(parent, name, false);
                return Err(e);
            }
        }
        self.meta_fd(file.as_fd(), rel, node);
        Ok(true)
    }

    fn write_data(&mut self, file: &File, rel: &[u8], node: &Node) -> Result<u64> {
        let size = node.size;
        let ranges: Vec<(u64, u64)> = match node.content.as_ref().and_then(|c| c.segments.as_ref())
        {
            Some(segs) => segs.clone(),
            None => vec![(0, size)],
        };
        let mut buf = std::mem::take(&mut self.buf);
        let mut written = 0;
        let result = (|| {
            for (off, len) in ranges {
                let end = off.saturating_add(len).min(size);
                let mut pos = off;
                while pos < end {
                    let want = ((end - pos) as usize).min(buf.len());
                    let n = self
                        .tree
                        .read_at(node, pos, &mut buf[..want])
                        .map_err(|e| self.read_err(rel, e))?;
                    if n == 0 {
                        return Err(self.read_err(
                            rel,
                            Error::corrupt(format!(
                                "file data ends at {pos}, before its size {size}"
                            )),
                        ));
                    }
                    file.write_all_at(&buf[..n], pos)
                        .map_err(|e| self.io_err(rel, e))?;
                    pos += n as u64;
                    written += n as u64;
                }
            }
            file.set_len(size).map_err(|e| self.io_err(rel, e))
        })();
        self.buf = buf;
        result.map(|()| written)
    }
}
