//! Tar at the header level: enough to split a stream into exact pieces and to know what each
//! member is, without ever normalizing a byte.

pub mod header;
pub mod pax;
mod reader;

pub use reader::{ByteSource, End, IoSource, Member, TarReader};
