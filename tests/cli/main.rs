//! Integration tests: the real `cellar` binary on real tar streams from GNU tar, bsdtar and
//! busybox tar. One test binary (a single link step), one module per behaviour.

mod common;
mod tar_bytes;
mod trees;

mod bad_input;
mod browse;
mod cli;
mod concurrency;
mod crash;
mod damage;
mod damaged_index;
mod dedup;
mod dirsnap;
mod dump;
mod exact;
mod full_disk;
mod gc;
mod interrupted;
mod live_dir;
mod memory;
mod mount;
mod oci;
mod prune;
mod prune_crash;
mod readme_json;
mod readonly;
mod repair_packs;
mod restore;
mod schema;
mod verify;
mod verify_subset;
