//! Typed identifiers. Every stored object is named by the blake3 hash of its uncompressed bytes.

use std::fmt;

/// Length of the short ids commands print.
pub const SHORT_ID_LEN: usize = 12;

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn short(&self) -> String {
                self.hex()[..SHORT_ID_LEN].to_string()
            }

            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some(Self(out))
            }

            pub fn from_slice(b: &[u8]) -> Option<Self> {
                Some(Self(b.try_into().ok()?))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.hex())
            }
        }
    };
}

hash_id!(
    /// blake3 of a chunk's uncompressed bytes (data chunks and metadata objects alike).
    ChunkId
);
hash_id!(
    /// blake3 of a sealed pack file's bytes; also its file name.
    PackId
);
hash_id!(
    /// blake3 of a snapshot's record.
    SnapshotId
);

impl ChunkId {
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }
}
