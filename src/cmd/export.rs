//! `cellar export`: the exact ingested stream, an OCI image layout, or a `docker save` archive.

use std::io::{BufWriter, IsTerminal, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use cellar_store::oci::{validate_tag, Image, ImageOptions, LayerKey, LeftOut};
use cellar_store::{Error, ReadLease, Snapshot};

use crate::cli::{ExportArgs, ExportFormat, UsageError};
use crate::output::{errln, outln, print_json, LeftOutJson};

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
    opts.settings.validate()?;
    let tag = args.tag.as_deref().unwrap_or("latest");
    validate_tag(tag)?;
    let to_stdout = args.output.as_deref().is_none_or(|p| p == Path::new("-"));
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
        ExportFormat::Tar => {
            to_file_or_stdout(args.output.as_deref(), |out| store.export(&snap, out))?;
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
            to_file_or_stdout(args.output.as_deref(), |out| {
                store.write_docker_archive(&image, &mut layers, &repo_tag, out)
            })?;
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

/// Run `write` into FILE or into stdout (no FILE, `-` or `/dev/stdout`), which must not be a
/// terminal. A FILE that is a symlink is written at its target. A regular file is written
/// beside it and renamed into place, so a failed or interrupted export leaves no partial file
/// behind; a device, FIFO or socket is written through, as `tar -f` and `cp` do (renaming a
/// file over `/dev/null` would replace the device). `/dev/stderr`, `/dev/fd/N` and
/// `/proc/self/fd/N` are the descriptor this process has, written as it is: a file it opened
/// for appending is appended to, not replaced.
fn to_file_or_stdout(
    path: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> cellar_store::Result<()>,
) -> anyhow::Result<()> {
    let fd = path.and_then(inherited_fd);
    if let (Some(fd), Some(path)) = (fd.filter(|&fd| fd != 1), path) {
        return to_inherited(fd, path, write);
    }
    let Some(path) = path.filter(|p| *p != Path::new("-") && fd.is_none()) else {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            return Err(UsageError(
                "refusing to write a tar stream to a terminal; redirect stdout or use -o FILE"
                    .into(),
            )
            .into());
        }
        let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
        write(&mut out)?;
        return out.flush().map_err(|e| Error::Output(e).into());
    };
    let shown = path;
    if let Some(why) = super::not_a_file_to_write(shown) {
        return Err(UsageError(format!("-o {}: {why}", shown.display())).into());
    }
    // Links followed by the kernel: /dev/stdout's /proc/self/fd/1 names a pipe by no path.
    if let Some(m) = std::fs::metadata(shown).ok().filter(|m| !m.is_file()) {
        return write_through(shown, &m, write);
    }
    // A file (or a name for a new one) is replaced where its last link points.
    let path = &link_target(path).with_context(|| format!("-o {}", shown.display()))?;
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "-o {}: no directory {}",
            path.display(),
            dir.display()
        ))
        .into());
    }
    // Mode 0666 less the umask, as any other new file.
    let tmp = staged(
        path,
        |b| {
            b.permissions(std::fs::Permissions::from_mode(0o666))
                .tempfile_in(dir)
        },
        |t| t.path(),
    )?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let writing = || format!("-o {}", shown.display());
    write(&mut out).map_err(|e| at_output(e, shown))?;
    out.flush().with_context(writing)?;
    drop(out);
    tmp.as_file().sync_all().with_context(writing)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir)
}

/// Where writing to `path` lands: `path` itself, or the end of the chain of symlinks it
/// starts (which need not exist yet, as with a shell's `>`).
fn link_target(path: &Path) -> std::io::Result<PathBuf> {
    let mut at = path.to_path_buf();
    // The kernel's own limit on a chain of links (ELOOP past it).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&at)?;
                at = parent_dir(&at).join(to);
            }
            Ok(_) => return Ok(at),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(at),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

/// Write into an existing device, FIFO or socket in place. What was written stays if the
/// export fails; a block device is synced at the end, as a file would be.
fn write_through(
    path: &Path,
    meta: &std::fs::Metadata,
    write: impl FnOnce(&mut dyn Write) -> cellar_store::Result<()>,
) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    write(&mut out).map_err(|e| at_output(e, path))?;
    out.flush().map_err(|e| at_output(Error::Output(e), path))?;
    drop(out);
    if meta.file_type().is_block_device() {
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    Ok(())
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

/// fsync a directory, so that a name just renamed into it survives a crash.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// A temporary file or directory, made by `make` (given a builder with the name set), that
/// is to become `target`: named `.NAME.XXXX.cellar-tmp` after it, so a leftover (the machine
/// went down) says what it was, and removed by an interrupt. Interrupts are held from before
/// it is made until its cleaner takes them.
fn staged<T>(
    target: &Path,
    make: impl FnOnce(&mut tempfile::Builder) -> std::io::Result<T>,
    path: impl Fn(&T) -> &Path,
) -> anyhow::Result<T> {
    let prefix = format!(
        ".{}.",
        target.file_name().unwrap_or_default().to_string_lossy()
    );
    let held = crate::signals::hold_interrupts();
    let made = make(
        tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".cellar-tmp"),
    )
    .map_err(os_error)
    .with_context(|| format!("staging {} beside it", target.display()))?;
    crate::signals::remove_on_interrupt(held, path(&made).to_path_buf());
    Ok(made)
}

/// The descriptor of this process a path names without naming a file: `/dev/stdout`,
/// `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`. Opening one anew would start a new file
/// description (at offset 0, or truncating) and fail for a socket.
fn inherited_fd(path: &Path) -> Option<i32> {
    let p = path.to_str()?;
    match p {
        "/dev/stdout" => Some(1),
        "/dev/stderr" => Some(2),
        _ => p
            .strip_prefix("/dev/fd/")
            .or_else(|| p.strip_prefix("/proc/self/fd/"))?
            .parse()
            .ok(),
    }
}

/// Write into descriptor `fd` of this process, as it is.
fn to_inherited(
    fd: i32,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> cellar_store::Result<()>,
) -> anyhow::Result<()> {
    // SAFETY: dup only reads the descriptor table; the copy is owned here and closed on drop.
    let copy = unsafe { libc::dup(fd) };
    if copy < 0 {
        let e = std::io::Error::last_os_error();
        return Err(e).with_context(|| format!("-o {}", path.display()));
    }
    // SAFETY: `copy` is a new descriptor nothing else owns.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(copy) });
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    write(&mut out).map_err(|e| at_output(e, path))?;
    out.flush().map_err(|e| at_output(Error::Output(e), path))
}

/// An export's error, with `-o PATH` before it when it was writing there that failed (and
/// not, say, reading a damaged store).
fn at_output(e: Error, path: &Path) -> anyhow::Error {
    let failed_writing = matches!(e, Error::Output(_));
    let e = anyhow::Error::from(e);
    match failed_writing {
        true => e.context(format!("-o {}", path.display())),
        false => e,
    }
}

/// tempfile's error without what it adds to the OS's message: ` at path "…"`, the name of its
/// own making, Debug-quoted (the caller's context names the target). Its type is private and
/// gives the OS's error only through Display.
fn os_error(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.rsplit_once(" at path \"") {
        Some((os, _)) if text.ends_with('"') => std::io::Error::new(e.kind(), os.to_string()),
        _ => e,
    }
}

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(".".as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OS's message is kept; tempfile's quoted name of its own making is not.
    #[test]
    fn staging_errors_say_what_the_os_said() {
        let e = tempfile::Builder::new()
            .tempfile_in("/nonexistent-dir")
            .unwrap_err();
        assert!(e.to_string().contains(" at path \""), "{e}");
        let plain = os_error(e);
        assert_eq!(plain.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(plain.to_string(), "No such file or directory (os error 2)");
    }
}
