//! `cellar snapshot`: ingest a tar stream from stdin, a file, or a command's stdout.

use std::fs::File;
use std::io::{IsTerminal, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Context;
use cellar_store::tar::{write_dir, DirOptions};
use cellar_store::{Error, IngestInput, IngestOptions, IngestReport, Store, WriterExited};
use serde::Serialize;

use crate::cli::{Incomplete, Interrupted, SnapshotArgs, UsageError};
use crate::output::{errln, outln, print_json, SnapshotJson};
use crate::progress::IngestBar;

use super::source::SourceCommand;

#[derive(Serialize)]
struct SnapshotReport<'a> {
    #[serde(flatten)]
    snapshot: SnapshotJson<'a>,
    /// Raw bytes that were new to the store (before compression).
    new_bytes: u64,
    /// Payload bytes that were already stored.
    known_bytes: u64,
    warnings: Vec<String>,
    /// `--dir`: paths that could not be read, so the snapshot lacks them or holds them
    /// imperfectly (exit status 3).
    unreadable: u64,
}

pub fn run(root: &Path, args: SnapshotArgs) -> anyhow::Result<()> {
    cellar_store::validate_name(&args.name)?;
    if args.dir.is_none() && (!args.exclude.is_empty() || args.one_file_system) {
        return Err(UsageError("--exclude and --one-file-system need --dir".into()).into());
    }
    if args.command.is_empty() && !args.allow_exit.is_empty() {
        return Err(UsageError("--allow-exit needs a command (-- CMD [ARGS]...)".into()).into());
    }
    let from_stdin = args.dir.is_none()
        && args.command.is_empty()
        && args.source.as_deref() == Some("-".as_ref());
    const TERMINAL: &str = "refusing to read a tar stream from a terminal; pipe one in, or \
                            give a FILE, -- CMD or --dir DIR";
    if from_stdin && std::io::stdin().is_terminal() {
        return Err(UsageError(TERMINAL.into()).into());
    }
    if from_stdin && stdin_is_dir() {
        return Err(UsageError(
            "stdin is a directory, not a tar stream; to snapshot a directory use --dir DIR".into(),
        )
        .into());
    }
    // Bad arguments are refused before the store is opened (or made).
    if let Some((dir, why)) = args
        .dir
        .as_deref()
        .and_then(|d| Some((d, super::not_a_dir(d)?)))
    {
        return Err(UsageError(format!("--dir {}: {why}", dir.display())).into());
    }
    if let Some(dir) = args.dir.as_deref() {
        let shown = format!("--dir {}", dir.display());
        let why = "its packs change while they are read: snapshot a copy";
        super::outside_store(root, dir, &shown, why)?;
    }
    // Reading a directory as a tar file would fail only once the store is open, with EISDIR.
    if let Some(source) = args.source.as_ref().filter(|s| s.is_dir()) {
        return Err(UsageError(format!(
            "{src} is a directory, not a tar stream; to snapshot a directory use --dir {src}",
            src = source.display()
        ))
        .into());
    }
    // A source file that cannot be opened is refused before the store is made.
    let file = match args.source.as_deref() {
        Some(source) if source.as_os_str() != "-" && args.dir.is_none() => {
            // Not made the controlling terminal by it, when it is one.
            let file = File::options()
                .read(true)
                .custom_flags(libc::O_NOCTTY)
                .open(source);
            Some(file.with_context(|| format!("opening {}", source.display()))?)
        }
        _ => None,
    };
    // By name too (`/dev/stdin`, `/dev/tty`), as `-` is.
    if let (Some(file), Some(source)) = (&file, &args.source) {
        if file.is_terminal() {
            return Err(UsageError(format!("{}: {TERMINAL}", source.display())).into());
        }
    }
    // Before any thread starts: an interrupt stops the ingest, which then discards what it
    // wrote (its sealed packs, its scratch files), as after any error.
    let held = crate::signals::hold_interrupts();
    let new = !root.join("cellar.db").exists();
    let store = Store::create(root).with_context(|| match new {
        true => format!("cannot create the store at {}", root.display()),
        false => format!("cannot open the store at {}", root.display()),
    })?;
    let mut opts = IngestOptions::new(&args.name);
    let interrupted = crate::signals::cancel_on_interrupt(held, opts.cancel.clone());
    let stopped = |e: anyhow::Error| match interrupted.load(Ordering::SeqCst) {
        0 => e,
        sig => Interrupted(sig).into(),
    };
    opts.labels = args.labels.iter().cloned().collect();
    opts.image = args.image.settings();
    opts.on_wait = Box::new(|msg| errln!("cellar: {msg}"));
    let _bar = IngestBar::start(opts.progress.clone());

    let mut notes = SourceNotes::default();
    let report = ingest(&store, &args, file, opts, &mut notes).map_err(stopped)?;
    drop(_bar);
    let SourceNotes {
        mut warnings,
        unreadable,
    } = notes;
    warnings.extend(report.warnings.iter().cloned());
    for w in &warnings {
        crate::output::warn(w);
    }
    if args.json {
        print_json(&SnapshotReport {
            snapshot: SnapshotJson::from(&report.snapshot),
            new_bytes: report.new_bytes,
            known_bytes: report.known_bytes,
            warnings,
            unreadable,
        })?;
    } else {
        outln!("{}", report.snapshot.short_id());
    }
    match unreadable {
        0 => Ok(()),
        n => Err(Incomplete(format!(
            "snapshot {} was recorded without {n} path(s) it could not read, or with them \
             incomplete (warned of above)",
            report.snapshot.short_id()
        ))
        .into()),
    }
}

/// What the source said beside its stream: warnings, and (`--dir`) how many paths could
/// not be read.
#[derive(Default)]
struct SourceNotes {
    warnings: Vec<String>,
    unreadable: u64,
}

/// Ingest what the arguments name: a directory, a file or stdin, or a command's output.
fn ingest(
    store: &Store,
    args: &SnapshotArgs,
    file: Option<File>,
    opts: IngestOptions,
    notes: &mut SourceNotes,
) -> anyhow::Result<IngestReport> {
    Ok(if let Some(dir) = &args.dir {
        snapshot_dir(store, dir, args, opts, notes)?
    } else if args.command.is_empty() {
        let Some(file) = file else {
            return Ok(store.ingest(stdin_input()?, opts, || Ok(()))?);
        };
        // The stream's own faults say which file: where the offset and member are.
        let source = args.source.as_deref().unwrap_or("-".as_ref());
        match store.ingest(IngestInput::File(file), opts, || Ok(())) {
            Ok(r) => r,
            Err(e @ (Error::BadTar { .. } | Error::BadCompression { .. } | Error::Input(_))) => {
                return Err(anyhow::Error::from(e).context(source.display().to_string()))
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        let exited = WriterExited::default();
        let cancel = opts.cancel.clone();
        let mut cmd = SourceCommand::spawn(
            &args.command,
            &args.allow_exit,
            exited.clone(),
            cancel.clone(),
        )?;
        let stdout = cmd.child.stdout.take().expect("piped stdout");
        let stdout =
            IngestInput::command_pipe(stdout, exited).context("reading the command's stdout")?;
        let result = store.ingest(stdout, opts, || {
            cmd.finish(&args.allow_exit, &cancel)
                .map(|w| notes.warnings.extend(w))
        });
        match result {
            Ok(r) => r,
            // Stopped because the command failed: its status is the error.
            Err(Error::Interrupted) if cmd.failed() => {
                return Err(cmd.failed_early(&args.allow_exit));
            }
            // Interrupted: the command, and what it started, are stopped.
            Err(Error::Interrupted) => {
                cmd.stop();
                return Err(Error::Interrupted.into());
            }
            Err(e) => return Err(cmd.explain(e)),
        }
    })
}

/// Whether stdin is a directory (`cellar snapshot - < /etc`), which reads fail with EISDIR.
fn stdin_is_dir() -> bool {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let Ok(fd) = stdin.as_fd().try_clone_to_owned() else {
        return false;
    };
    File::from(fd).metadata().is_ok_and(|m| m.is_dir())
}

/// Standard input: a stream, or a file when the shell redirected one (`cellar snapshot - <
/// FILE`), which the engine can then map instead of copying it in.
fn stdin_input() -> anyhow::Result<IngestInput> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut file = File::from(
        stdin
            .as_fd()
            .try_clone_to_owned()
            .context("reading stdin")?,
    );
    // A mapping starts at the file's start; stdin may have been read from already.
    let at_start = file.stream_position().is_ok_and(|p| p == 0);
    Ok(match file.metadata() {
        Ok(m) if m.file_type().is_file() && at_start => IngestInput::File(file),
        _ => IngestInput::pipe(stdin).context("reading stdin")?,
    })
}

/// `--dir`: archive the directory natively on a thread, ingesting the stream as it is written.
fn snapshot_dir(
    store: &Store,
    dir: &Path,
    args: &SnapshotArgs,
    opts: IngestOptions,
    notes: &mut SourceNotes,
) -> anyhow::Result<IngestReport> {
    let dir_opts = DirOptions {
        excludes: args.exclude.iter().map(|p| p.as_bytes().to_vec()).collect(),
        one_file_system: args.one_file_system,
        leave_out: std::fs::metadata(store.root())
            .map(|m| vec![(m.dev(), m.ino())])
            .unwrap_or_default(),
    };
    let (reader, mut writer) = std::io::pipe().context("creating a pipe")?;
    let root = dir.to_path_buf();
    let mut archiver = Some(std::thread::spawn(move || {
        write_dir(&root, &dir_opts, &mut writer)
    }));
    let mut join = || {
        archiver
            .take()
            .map(|a| {
                a.join()
                    .map_err(|_| Error::SourceFailed("the directory archiver panicked".into()))?
            })
            .transpose()
    };
    let result = store.ingest(IngestInput::stream(reader), opts, || {
        if let Some(report) = join()? {
            notes.warnings.extend(report.warnings);
            notes.unreadable += report.unreadable;
        }
        Ok(())
    });
    match result {
        Ok(r) => Ok(r),
        // Not waited for: the walk may be stuck in a read that never returns (a hung network
        // or FUSE file system), and the process ends now.
        Err(Error::Interrupted) => Err(Error::Interrupted.into()),
        // The stream broke because the archiver stopped: its error is the one that explains.
        Err(e) => match join() {
            Err(archiver) if !matches!(archiver, Error::Output(_)) => Err(archiver.into()),
            _ => Err(e.into()),
        },
    }
}
