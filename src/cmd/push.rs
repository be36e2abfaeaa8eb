//! `cellar push`: a snapshot's image to a registry over the OCI distribution API. Layers the
//! registry already has (known by their cached digests) are skipped; the rest stream from the
//! store to the registry without being staged anywhere.

use std::io::IsTerminal;

use anyhow::bail;
use cellar_store::oci::{Codec, Layer, LayerDigest, LayerKey, MANIFEST_MEDIA_TYPE};
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
    layers: Vec<LayerReport>,
    config: String,
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

    let mut client = Client::new(reference, args.insecure)?;
    client.ping()?;
    let target = client.reference().to_string();

    let count = specs.len();
    let mut layers = Vec::with_capacity(count);
    let mut reports = Vec::with_capacity(count);
    for (i, spec) in specs.into_iter().enumerate() {
        let key = LayerKey { spec, codec };
        let n = format!("layer {}/{count}", i + 1);
        if let Some(known) = store.known_layer_digest(&key)? {
            if client.blob_exists(known.digest.as_str())? {
                errln!("{n}: {} exists", known.digest);
                reports.push(LayerReport {
                    digest: known.digest.to_string(),
                    size: known.size,
                    uploaded: false,
                });
                layers.push(Layer { key, digest: known });
                continue;
            }
        }
        errln!("{n}: uploading");
        let bar = upload_bar(&n);
        let digest = client.put_blob_streaming(
            |out| Ok(store.write_layer(&key, out)?.digest),
            |d: &LayerDigest| d.digest.to_string(),
            &bar,
        );
        bar.finish_and_clear();
        let digest = digest?;
        errln!(
            "{n}: {} uploaded ({})",
            digest.digest,
            human_bytes(digest.size)
        );
        reports.push(LayerReport {
            digest: digest.digest.to_string(),
            size: digest.size,
            uploaded: true,
        });
        layers.push(Layer { key, digest });
    }

    let image = store.assemble(&snap, &settings, layers)?;
    let config = image.config_digest.as_str();
    if client.put_small_blob(config, &image.config)? {
        errln!("config: {config} uploaded");
    } else {
        errln!("config: {config} exists");
    }
    let answered = client.put_manifest(MANIFEST_MEDIA_TYPE, &image.manifest)?;
    let digest = image.manifest_digest.as_str();
    if let Some(theirs) = answered.filter(|d| d != digest) {
        bail!(
            "{target}: the registry stored the manifest as {theirs}, but it is {digest} \
             (the registry altered it?)"
        );
    }
    errln!("pushed {target} ({digest})");
    if args.json {
        print_json(&Report {
            target,
            digest: digest.to_string(),
            layers: reports,
            config: config.to_string(),
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
