//! Tar at the header level: enough to split a stream into exact pieces and to know what each
//! member is, without ever normalizing a byte.

pub(crate) mod glob;
pub mod header;
mod member;
pub mod pax;
mod reader;
pub mod writer;

pub use member::Member;
pub use reader::{ByteSource, End, IoSource, TarReader};
pub use writer::{write_dir, DirOptions, DirReport, MemberWriter, Payload};

#[cfg(test)]
mod tests;
