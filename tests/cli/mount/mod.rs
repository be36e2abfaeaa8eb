//! `cellar mount`: a read-only FUSE view of one snapshot (or of every snapshot, as NAME/ID/...
//! and NAME/latest), checked against GNU tar's extraction of the same stream with rsync and
//! with direct stat/getxattr/read calls; the foreground, --daemon and signal lifecycles; and the
//! mount beside writers and concurrent readers.
//!
//! Every mount is held by a `Mounted` guard (guard.rs) that detaches it (umount -l) and reaps
//! or kills the process serving it, so a failing test never leaves a mount behind.

// The browse tests' oracle: walking a tree, GNU tar's extraction, archiving, xattr names.
use crate::browse::oracle;

mod fixtures;
mod guard;

mod access;
mod faithful;
mod feed;
mod forget;
mod lifecycle;
mod limits;
mod load;
mod order;
mod prune_gc;
mod view;
