//! OCI images: the harness for `cellar export --format oci|docker-archive`, `cellar serve` and
//! `cellar push`, judged by independent tools. skopeo moves and inspects images, umoci unpacks
//! them as root, Debian's docker-registry is the registry to push to, and rsync compares an
//! unpacked rootfs with GNU tar's extraction of the snapshot's stream.
//!
//! - `registry.rs`: `Registry::start()`, a throwaway registry on a loopback port, killed on drop.
//! - `http.rs`: `http_get` / `http_head` / `http_request`, a strict HTTP/1.1 client.
//! - `tools.rs`: `skopeo_copy`, `skopeo_inspect_raw`, `skopeo_inspect_config`, `umoci_unpack`,
//!   `umoci_image_from_tars` (a reference image built without cellar).
//! - `layout.rs`: `oci_image(dir, tag)`, reading an OCI layout and checking every blob and
//!   descriptor; layer decompression and diff_ids.
//! - `compare.rs`: `assert_same_tree` (rsync dry runs both ways) and its negative control.
//! - `harness.rs`: tests proving the helpers on an image built by umoci alone.
//!
//! A typical export test: snapshot a stream, `cellar export ID --format oci -o L --tag t`,
//! `oci_image(&L, "t").assert_diff_ids()`, `umoci_unpack(&L, "t", &bundle)`, GNU tar extracts
//! the stream, `assert_same_tree(&extraction, &rootfs)`.

// Helpers land before the commands that use them; some have no caller yet.
#![allow(dead_code)]

pub(crate) mod compare;
mod http;
mod layout;
mod registry;
mod tools;

mod cellar;
mod damage;
mod durable;
mod export;
mod export_dir;
mod harness;
mod left_out;
mod pack;
mod push;
mod push_auth;
mod push_tls;
mod serve;
mod serve_compressed;
mod serve_process;
mod written_layer;

pub(crate) use cellar::Served;
pub(crate) use compare::*;
pub(crate) use http::*;
pub(crate) use layout::*;
pub(crate) use registry::*;
pub(crate) use tools::*;
