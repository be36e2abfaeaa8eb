//! `cellar push`: a snapshot's image to a registry over the OCI distribution API. Each layer's
//! digest is asked for with HEAD before anything is sent, and a layer the registry has is
//! skipped. A layer whose digest is known (cached from an earlier image, or the stream's own
//! sha256) streams from the store to the registry; one never made in this codec is made once
//! into a spool file first, which gives its digest, and goes up from there if it must.

use std::io::IsTerminal;

use anyhow::bail;
use cellar_store::oci::{Codec, LayerDigest, LayerKey, MANIFEST_MEDIA_TYPE};
use cellar_store::{ReadLease, Store};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::{PushArgs, UsageError};
use crate::output::{errln, human_bytes, outln, print_json, LeftOutJson};
use crate::registry::{Client, Reference};

#[derive(Serialize)]
struct Report {
    target: String,
    digest: String,
    config: String,
    layers: Vec<LayerReport>,
    left_out: LeftOutJson,
}

#[derive(Serialize)]
struct LayerReport {
    digest: String,
    size: u64,
    uploaded: bool,
}

pub fn run(lease: &ReadLease, args: PushArgs) -> anyhow::Result<()> {
    let store: &Store = lease.store();
    let reference = Reference::parse(&args.target).map_err(UsageError)?;
    let codec = Codec::parse(&args.compression).expect("clap checked the codec");
    let settings = args.image.settings();
    settings.validate()?;
    let snap = lease.resolve(&args.snap)?;
    let specs = lease.image_layers(&snap, args.layers.mode())?;
    let left_out = super::warn_left_out(store, &snap)?;

    let mut client = Client::new(reference, args.insecure, args.cert_dir.as_deref())?;
    client.ping()?;
    let target = client.reference().to_string();

    let count = specs.len();
    let mut layers = Vec::with_capacity(count);
    let mut reports = Vec::with_capacity(count);
    for (i, spec) in specs.into_iter().enumerate() {
        let n = format!("layer {}/{count}", i + 1);
        let mut ready = store.ready_layer(LayerKey { spec, codec }, || {
            errln!("cellar: {n}: making it, to learn its digest")
        })?;
        let digest = ready.layer.digest.clone();
        if client.blob_exists(digest.digest.as_str())? {
            errln!("cellar: {n}: {} exists", digest.digest);
            reports.push(LayerReport {
                digest: digest.digest.to_string(),
                size: digest.size,
                uploaded: false,
            });
            layers.push(ready.layer);
            continue;
        }
        errln!("cellar: {n}: uploading");
        let bar = upload_bar(&n);
        let sent = client.put_blob_streaming(
            // Called again when the registry refuses a chunked upload: from the start each time.
            |out| Ok(store.write_ready(&mut ready, out)?),
            |d: &LayerDigest| d.digest.to_string(),
            &bar,
        );
        bar.finish_and_clear();
        let digest = sent?;
        errln!(
            "cellar: {n}: {} uploaded ({})",
            digest.digest,
            human_bytes(digest.size)
        );
        reports.push(LayerReport {
            digest: digest.digest.to_string(),
            size: digest.size,
            uploaded: true,
        });
        layers.push(ready.layer);
    }

    let image = store.assemble(&snap, &settings, layers)?;
    let config = image.config_digest.as_str();
    if client.put_small_blob(config, &image.config)? {
        errln!("cellar: config: {config} uploaded");
    } else {
        errln!("cellar: config: {config} exists");
    }
    let answered = client.put_manifest(MANIFEST_MEDIA_TYPE, &image.manifest)?;
    let digest = image.manifest_digest.as_str();
    if let Some(theirs) = answered.filter(|d| d != digest) {
        bail!(
            "{target}: the registry stored the manifest as {theirs}, but it is {digest} \
             (the registry altered it?)"
        );
    }
    errln!("cellar: pushed {target} ({digest})");
    if args.json {
        print_json(&Report {
            target,
            digest: digest.to_string(),
            config: config.to_string(),
            layers: reports,
            left_out: LeftOutJson::from(&left_out),
        })
    } else {
        outln!("{digest}");
        Ok(())
    }
}

/// Bytes sent so far, on stderr when it is a terminal.
fn upload_bar(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg}: {bytes} sent, {binary_bytes_per_sec} [{elapsed}]",
        )
        .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}
