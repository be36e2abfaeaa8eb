//! Tar at the header level: enough to split a stream into exact pieces and to know what each
//! member is, without ever normalizing a byte.

mod glob;
pub mod header;
pub mod pax;
mod reader;
pub mod writer;

pub use reader::{ByteSource, End, IoSource, Member, TarReader};
pub use writer::{write_dir, DirOptions, DirReport, MemberWriter, Payload};

#[cfg(test)]
mod tests;
