//! The output stream: buffering, block padding, copying file data, the end of the archive.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::tar::header::BLOCK;

/// GNU tar's default record size: the archive's length is a multiple of it.
pub(super) const RECORD: u64 = 10240;
/// Read and write in pieces this large: files are never held in memory whole.
const COPY_BUF: usize = 64 * 1024;

/// How copying a file's bytes went wrong (the missing bytes were written as zeros).
pub(super) enum ReadTrouble {
    /// The file ended before the size in its header.
    Shrank,
    Failed {
        at: u64,
        error: io::Error,
    },
}

/// The output: buffered, counting, every error an `Error::Output`.
pub(super) struct Out<'a> {
    w: BufWriter<&'a mut dyn Write>,
    written: u64,
    /// For file data.
    buf: Vec<u8>,
}

impl<'a> Out<'a> {
    pub(super) fn new(out: &'a mut dyn Write) -> Out<'a> {
        Out {
            w: BufWriter::with_capacity(COPY_BUF, out),
            written: 0,
            buf: vec![0; COPY_BUF],
        }
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).map_err(Error::Output)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<()> {
        const ZEROS: [u8; BLOCK] = [0; BLOCK];
        while n > 0 {
            let k = n.min(BLOCK as u64) as usize;
            self.write(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    pub(super) fn written(&self) -> u64 {
        self.written
    }

    pub(super) fn pad_to(&mut self, multiple: u64) -> Result<()> {
        self.zeros(self.written.next_multiple_of(multiple) - self.written)
    }

    /// Copy exactly `len` bytes of `file` from `offset`. If the file ends early or cannot be
    /// read, the rest is written as zeros (the header has promised `len` bytes) and the
    /// trouble returned.
    pub(super) fn copy(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Result<Option<ReadTrouble>> {
        let mut done = 0;
        while done < len {
            let want = (len - done).min(self.buf.len() as u64) as usize;
            match file.read_at(&mut self.buf[..want], offset + done) {
                Ok(0) => {
                    self.zeros(len - done)?;
                    return Ok(Some(ReadTrouble::Shrank));
                }
                Ok(n) => {
                    self.w.write_all(&self.buf[..n]).map_err(Error::Output)?;
                    self.written += n as u64;
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.zeros(len - done)?;
                    let at = offset + done;
                    return Ok(Some(ReadTrouble::Failed { at, error }));
                }
            }
        }
        Ok(None)
    }

    /// The end-of-archive marker and the padding to a whole record.
    pub(super) fn finish(mut self) -> Result<()> {
        self.zeros(2 * BLOCK as u64)?;
        self.pad_to(RECORD)?;
        self.w.flush().map_err(Error::Output)
    }
}
