//! Browsing a snapshot as a tree: `cellar ls`, `cellar cat` and `cellar diff`, checked against
//! what `tar --numeric-owner --xattrs --xattrs-include='*' -xpf` extracts from the same stream
//! (the tests run as root, so the extraction keeps owners, modes, devices and xattrs).

pub(crate) mod oracle;

mod diff;
mod edge;
mod errors;
mod extraction;
mod find;
mod headers;
mod listing;
mod metadata;
mod names;
