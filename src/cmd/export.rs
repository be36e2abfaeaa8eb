//! `cellar export`: the exact ingested stream (or with `--path`, a tar of part of the tree), an
//! OCI image layout, or a `docker save` archive.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context;
use cellar_store::oci::{validate_tag, Image, ImageOptions, LayerKey, LeftOut};
use cellar_store::tree::normalize_path;
use cellar_store::{ReadLease, Snapshot, Store};

use super::target::{at_output, parent_dir, staged, sync_dir, Target};
use crate::cli::{ExportArgs, ExportFormat, UsageError};
use crate::output::{errln, json_path, outln, print_json, LeftOutJson};

pub fn run(lease: &ReadLease, args: ExportArgs) -> anyhow::Result<()> {
    let store = lease.store();
    let snap = lease.resolve(&args.snap)?;
    let opts = ImageOptions {
        mode: args.layers.mode(),
        settings: args.image.settings(),
        ..Default::default()
    };
    if args.format == ExportFormat::Tar
        && (args.tag.is_some() || args.layers.layers.is_some() || args.image.given())
    {
        return Err(UsageError(
            "--tag, --layers and --image-* describe an image: they need --format oci or \
             docker-archive"
                .into(),
        )
        .into());
    }
    if args.path.is_some() && args.format != ExportFormat::Tar {
        return Err(UsageError(
            "--path exports part of a snapshot's tree as a tar: it needs --format tar".into(),
        )
        .into());
    }
    opts.settings.validate()?;
    let tag = args.tag.as_deref().unwrap_or("latest");
    validate_tag(tag)?;
    let to_stdout = args.to_stdout();
    if let Some(out) = args.output.as_deref().filter(|_| !to_stdout) {
        let shown = format!("-o {}", out.display());
        super::outside_store(store.root(), out, &shown, super::WOULD_DAMAGE)?;
    }
    if to_stdout && args.json && args.format != ExportFormat::Oci {
        return Err(
            UsageError("--json needs -o FILE: stdout carries what is exported".into()).into(),
        );
    }
    match args.format {
        ExportFormat::Tar if args.path.is_some() => dump(store, &snap, &args),
        ExportFormat::Tar => {
            Target::of(args.output.as_deref())?.write(|out| store.export(&snap, out))?;
            if args.json {
                print_json(&serde_json::json!({
                    "snapshot": snap.id.hex(),
                    "name": snap.name,
                    "size": snap.stream_len,
                    "sha256": snap.stream_sha256,
                    "output": args.output,
                }))?;
            }
            Ok(())
        }
        ExportFormat::DockerArchive => {
            // Before any layer is made.
            let target = Target::of(args.output.as_deref())?;
            let left_out = super::warn_left_out(store, &snap)?;
            // A layer whose digest is not known is made once, into a spool file, and copied
            // into the archive from there.
            let mut layers = lease
                .image_layers(&snap, opts.mode)?
                .into_iter()
                .map(|spec| {
                    let codec = opts.codec;
                    store.ready_layer(LayerKey { spec, codec }, || {})
                })
                .collect::<Result<Vec<_>, _>>()?;
            let made = layers.iter().map(|r| r.layer.clone()).collect();
            let image = store.assemble(&snap, &opts.settings, made)?;
            let repo_tag = format!("{}:{}", snap.name, tag);
            let to_stdout = target.is_stdout();
            target.write(|out| store.write_docker_archive(&image, &mut layers, &repo_tag, out))?;
            // With the archive on stdout there is no room for a report.
            if to_stdout {
                return Ok(());
            }
            report(&snap, tag, &image, &left_out, args.json)
        }
        ExportFormat::Oci => {
            let dir = args
                .output
                .as_deref()
                .filter(|d| *d != Path::new("-"))
                .ok_or_else(|| {
                    UsageError("--format oci writes a directory: give it with -o DIR".into())
                })?;
            let specs = lease.image_layers(&snap, opts.mode)?;
            let left_out = super::warn_left_out(store, &snap)?;
            let image = to_layout(dir, |layout, scratch| {
                store.write_oci_layout(&snap, specs, &opts, layout, tag, scratch)
            })?;
            errln!("cellar: wrote {}:{} to {}", snap.name, tag, dir.display());
            report(&snap, tag, &image, &left_out, args.json)
        }
    }
}

/// `--path P`: a tar of P and what is below it, made from the snapshot's tree.
fn dump(store: &Store, snap: &Snapshot, args: &ExportArgs) -> anyhow::Result<()> {
    let path = args.path.as_deref().expect("a path").as_bytes();
    let tree = store.tree(snap)?;
    // Before anything is written: a path the snapshot lacks leaves no file behind.
    tree.resolve(path)?;
    let mut made = None;
    Target::of(args.output.as_deref())?.write(|out| {
        made = Some(tree.dump(path, out)?);
        Ok(())
    })?;
    let (size, sha256) = made.expect("written");
    if args.json {
        let (path, path_bytes) = json_path(&[b"/", &normalize_path(path)[..]].concat());
        let mut report = serde_json::json!({
            "snapshot": snap.id.hex(),
            "name": snap.name,
            "path": path,
            "path_bytes": path_bytes,
            "size": size,
            "sha256": sha256.hex(),
            "output": args.output,
        });
        // As everywhere: the exact bytes only for a path that is not UTF-8.
        if path_bytes.is_none() {
            report
                .as_object_mut()
                .expect("an object")
                .shift_remove("path_bytes");
        }
        print_json(&report)?;
    }
    Ok(())
}

/// The image written: its manifest digest, or with `--json` the whole description.
fn report(
    snap: &Snapshot,
    tag: &str,
    image: &Image,
    left_out: &LeftOut,
    json: bool,
) -> anyhow::Result<()> {
    if !json {
        outln!("{}", image.manifest_digest);
        return Ok(());
    }
    let layers: Vec<_> = image
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "digest": l.digest.digest.as_str(),
                "size": l.digest.size,
                "diff_id": l.digest.diff_id.as_str(),
                "media_type": l.media_type(),
            })
        })
        .collect();
    print_json(&serde_json::json!({
        "snapshot": snap.id.hex(),
        "name": snap.name,
        "tag": tag,
        "digest": image.manifest_digest.as_str(),
        "config": image.config_digest.as_str(),
        "layers": layers,
        "left_out": LeftOutJson::from(left_out),
    }))
}

/// Run `write(layout, scratch)` to write the OCI layout DIR so that a failed or interrupted
/// export leaves no partial layout behind. A new DIR is written beside it under a temporary
/// name (`layout` = `scratch` = that directory) and renamed into place when complete. An
/// existing DIR (a layout to add to) is written in place, each file made whole in a
/// temporary `scratch` directory inside it before it is renamed in, `index.json` last: it
/// stays the layout it was, plus whole blobs. Either temporary directory is removed on an
/// error or an interrupt.
fn to_layout<T>(
    dir: &Path,
    write: impl FnOnce(&Path, &Path) -> cellar_store::Result<T>,
) -> anyhow::Result<T> {
    let exists = match std::fs::symlink_metadata(dir) {
        // A symlink to a directory is written through, as before.
        Ok(_) if dir.is_dir() => true,
        Ok(_) => {
            return Err(UsageError(format!("-o {}: is not a directory", dir.display())).into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("looking up {}", dir.display())),
    };
    if exists {
        let scratch = staged(&dir.join("incoming"), |b| b.tempdir_in(dir), |d| d.path())?;
        let written = write(dir, scratch.path()).map_err(|e| at_output(e, dir))?;
        let shown = scratch.path().display().to_string();
        scratch
            .close()
            .with_context(|| format!("removing {shown}"))?;
        return Ok(written);
    }
    let parent = parent_dir(dir);
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let layout = staged(dir, |b| b.tempdir_in(parent), |d| d.path())?;
    let written = write(layout.path(), layout.path()).map_err(|e| at_output(e, dir))?;
    std::fs::rename(layout.path(), dir).with_context(|| format!("writing {}", dir.display()))?;
    // Renamed into place: nothing is left to remove.
    let _ = layout.keep();
    sync_dir(parent)?;
    Ok(written)
}
