//! The engine's one error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operation was asked to stop (an interrupt) and did, leaving nothing recorded.
    #[error("interrupted; nothing was recorded")]
    Interrupted,
    /// `repair-index` put a rebuilt index in place after this command had opened the old one:
    /// what it was about to write would go into the file set aside.
    #[error(
        "the index (cellar.db) was rebuilt by `cellar repair-index` while this command ran; \
         it stopped before changing anything: run it again"
    )]
    IndexReplaced,
    /// The input is not a well-formed tar stream. `offset` is the byte offset in the
    /// (decompressed) stream where the problem was found; `member` the member it was found in,
    /// or the one before the header it was found in.
    #[error("bad tar stream at byte {offset}{}: {what}", member_suffix(.member))]
    BadTar {
        offset: u64,
        member: Option<TarPlace>,
        what: String,
    },
    /// The compressed wrapper (gzip, zstd) around a tar stream is damaged.
    /// `offset` counts compressed bytes read when the decoder gave up.
    #[error("bad {codec} input at byte {offset} of the compressed stream: {err}")]
    BadCompression {
        codec: &'static str,
        offset: u64,
        err: std::io::Error,
    },
    #[error("no store at {0} (create one with `cellar snapshot`)")]
    NoStore(PathBuf),
    /// The store has pack files but its index is gone: a new index would know none of them
    /// (and gc would then delete them all as leftovers).
    #[error(
        "the index of the store at {0} (cellar.db) is missing, but its packs/ holds data: \
         `cellar repair-index` rebuilds the index from the packs"
    )]
    NoIndex(PathBuf),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// The program producing the stream failed (or ended in a way not allowed).
    #[error("{0}")]
    SourceFailed(String),
    #[error("reading the input: {0}")]
    Input(std::io::Error),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    #[error("index database: {0}{hint}", hint = repair_hint(.0))]
    Db(rusqlite::Error),
    /// The store's on-disk data does not match what the index says.
    #[error("store damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The store is in a state where the command would lose data; the message says what
    /// to run first.
    #[error("{0}")]
    Refused(String),
    /// Something the input makes (a directory's record) is larger than one stored object.
    #[error("{0}")]
    TooLarge(String),
    /// A snapshot reference that names nothing or more than one thing.
    #[error("{0}")]
    NotFound(String),
    #[error(
        "the store's format version {found} is newer than this cellar understands ({supported})"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    /// A write to a store on a read-only filesystem.
    #[error(
        "the store at {0} is on a read-only filesystem: it can be read (list, export, restore, \
         mount, serve...), not changed"
    )]
    ReadOnly(PathBuf),
    /// A write to a store whose filesystem is full (it was opened for reading only).
    #[error(
        "the filesystem holding the store at {0} is full: it can be read by list, show, \
         export, restore, cat, diff and verify; changed, mounted or served once space is freed \
         on it (mount and serve keep a lease in the index)"
    )]
    Full(PathBuf),
    /// A read-only store whose index is too old to read without migrating it.
    #[error(
        "the store at {path} is on a read-only filesystem and its index is schema {found}: open \
         it once where it can be written, so that cellar migrates it to schema {supported}"
    )]
    ReadOnlyOldSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

// Causes are part of each message (not `source()`), so a report prints every cause once.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e)
    }
}

/// Whether SQLite found the index file damaged, or not a database at all.
fn damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// What to do when SQLite finds the index file damaged, or has no room to write, wherever in a
/// command it does.
fn repair_hint(e: &rusqlite::Error) -> &'static str {
    if damaged(e) {
        return " (the index is damaged: `cellar repair-index` rebuilds it from the packs)";
    }
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => " (no space left on the store's filesystem)",
        // What SQLite calls a "disk I/O error" when it cannot grow its shared-memory file.
        Some(rusqlite::ErrorCode::SystemIoFailure)
            if matches!(e, rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE) =>
        {
            " (SQLite could not grow cellar.db-shm: is the store's filesystem full?)"
        }
        _ => "",
    }
}

/// Text from outside (a member's name, a path) as it may go into a one-line message: control
/// characters as C escapes (`\n`, `\t`...) or octal ones, so a name can neither break a
/// message's line nor forge another message. Everything else is kept.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_printable(&mut out, c);
    }
    out.into()
}

/// Raw bytes from outside (a member's path) as they may go into a message: [`printable`],
/// with bytes that are not UTF-8 as octal escapes (`\377`, as `ls -b` shows them) rather than
/// lost to U+FFFD.
pub fn path_text(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_printable(&mut out, c);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

/// One character of [`printable`] text. A backslash is doubled, so that escaped text reads
/// back one way (`a\\nb` is a backslash and an `n`, `a\nb` a newline).
fn push_printable(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0b' => out.push_str("\\v"),
        '\x0c' => out.push_str("\\f"),
        c if c.is_control() => {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:03o}"));
            }
        }
        c => out.push(c),
    }
}

/// Which member a bad tar stream's problem is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarPlace {
    /// This member, whose headers were read: its data, padding, or a header block of its own.
    In(String),
    /// The headers of the member after this one, which cannot name itself: a damaged header's
    /// name is not to be trusted.
    After(String),
}

fn member_suffix(member: &Option<TarPlace>) -> String {
    match member {
        Some(TarPlace::In(m)) => format!(" (member {m})"),
        Some(TarPlace::After(m)) => format!(" (the header after member {m})"),
        None => String::new(),
    }
}

impl Error {
    /// Whether this is SQLite finding the index file (`cellar.db`) damaged: what
    /// `repair-index` mends.
    pub fn index_damaged(&self) -> bool {
        matches!(self, Error::Db(e) if damaged(e))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt(what.into())
    }

    /// True for errors caused by what the user asked for rather than by the store or the input:
    /// the CLI reports these as usage errors.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::InvalidArgument(_) | Error::NotFound(_))
    }

    /// True for SQLite's "disk full" and I/O errors (making its `-shm` on a full filesystem
    /// fails as an I/O error): the caller looks at the filesystem to tell which.
    pub(crate) fn is_out_of_space(&self) -> bool {
        matches!(
            self,
            Error::Db(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure
                )
        )
    }
}

/// Attach a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> Error {
        Error::Db(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn a_damaged_index_file_points_at_repair_index() {
        for code in [rusqlite::ffi::SQLITE_CORRUPT, rusqlite::ffi::SQLITE_NOTADB] {
            let m = sqlite(code).to_string();
            assert!(m.starts_with("index database: "), "{m}");
            assert!(m.contains("`cellar repair-index`"), "{m}");
        }
        let busy = sqlite(rusqlite::ffi::SQLITE_BUSY).to_string();
        assert!(!busy.contains("repair-index"), "{busy}");
    }
}
