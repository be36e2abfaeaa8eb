//! `cellar pack`: serve the snapshot's image in-process and run `smolvm pack create` on it, so
//! smolvm's agent pulls the layers straight from the store. Nothing is left running after,
//! also when cellar is interrupted: smolvm, and whatever it started, is stopped first.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cellar_store::oci::ImageOptions;
use cellar_store::Store;

use crate::cli::{PackArgs, UsageError};
use crate::output::{errln, print_json, LeftOutJson};
use crate::serve::{Server, Shared};

pub fn run(store: Store, args: PackArgs) -> anyhow::Result<()> {
    // Before any thread starts (the server's), so the interrupt reaches the one that stops
    // smolvm.
    let held = crate::signals::hold_interrupts();
    // Taken by the interrupt's stopping for good, and by the spawn of smolvm: an interrupt
    // either finds smolvm started, or keeps it from starting.
    let stopping = Arc::new(Mutex::new(false));
    let stop = stopping.clone();
    crate::signals::end_on_interrupt(held, move |sig| {
        let mut stopped = stop.lock().unwrap_or_else(|e| e.into_inner());
        *stopped = true;
        crate::procs::stop_descendants(|| true);
        errln!("cellar: interrupted by signal {sig}; smolvm stopped");
    });
    let opts = ImageOptions {
        mode: args.layers.mode(),
        settings: args.image.settings(),
        ..Default::default()
    };
    opts.settings.validate()?;
    // What smolvm would fail on only after the image is served and its VM has booted.
    let out = &args.output;
    let why = super::not_a_file_to_write(out).or_else(|| {
        let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
        dir.filter(|d| !d.is_dir())
            .map(|d| format!("no directory {}", d.display()))
    });
    if let Some(why) = why.or_else(|| names_the_sidecar(out)) {
        return Err(UsageError(format!("-o {}: {why}", out.display())).into());
    }
    let shown = format!("-o {}", out.display());
    super::outside_store(store.root(), out, &shown, super::WOULD_DAMAGE)?;
    let store = Arc::new(store);
    // Held until smolvm is done: the image's snapshots stay whole even if forgotten meanwhile.
    let lease = store.read_lease("pack");
    let snap = lease.resolve(&args.snap)?;
    if let Some(host) = &args.pull_host {
        if host.is_empty() || host.contains('/') || !host.contains(':') {
            return Err(UsageError(format!("--pull-host {host:?}: expected HOST:PORT")).into());
        }
    }
    // After the usage errors, before the image is made (a layer not made yet takes a while).
    find_program(&args.smolvm)
        .map_err(|why| anyhow::anyhow!("cannot run {}: {why}", args.smolvm.display()))?;
    // The manifest first: its digest names the image, and its layers' digests are then
    // known (synthesized ones are computed here, once).
    let image = lease.image(&snap, &opts)?;
    let left_out = super::warn_left_out(&store, &snap)?;
    let shared = Arc::new(Shared::new(store, opts));
    let server = Server::start(shared, &args.listen)?;
    let host = args
        .pull_host
        .clone()
        .unwrap_or_else(|| reachable(server.addr()).to_string());
    let reference = format!("{host}/{}@{}", snap.name, image.manifest_digest);
    errln!("cellar: serving {reference}; running smolvm pack create");

    let result = run_smolvm(&args, &reference, &stopping);
    server.stop()?;
    result?;
    if args.json {
        print_json(&serde_json::json!({
            "snapshot": snap.id.hex(),
            "image": reference,
            "digest": image.manifest_digest.as_str(),
            "output": args.output,
            "left_out": LeftOutJson::from(&left_out),
        }))?;
    }
    Ok(())
}

/// After smolvm exits, how long its stderr may stay quiet before it counts as done: a process
/// smolvm started (the VM that pulled the image) may hold the pipe open for good.
const STDERR_QUIET: Duration = Duration::from_millis(250);

fn run_smolvm(args: &PackArgs, reference: &str, stopping: &Mutex<bool>) -> anyhow::Result<()> {
    crate::procs::adopt_orphans();
    let before = written(&args.output);
    let mut command = Command::new(&args.smolvm);
    let spawning = stopping.lock().unwrap_or_else(|e| e.into_inner());
    if *spawning {
        anyhow::bail!("interrupted");
    }
    let mut child = crate::signals::unblocked_in_child(&mut command)
        .args(["pack", "create", "--image", reference, "--output"])
        .arg(&args.output)
        .args(&args.extra)
        .stdin(Stdio::null())
        // Our stdout is for the report (`--json`): what smolvm says is a message.
        .stdout(std::io::stderr())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", args.smolvm.display()))?;
    drop(spawning);
    // smolvm's stderr goes on to ours as it comes (the error below does not repeat it), from
    // a thread: what is waited for is smolvm's exit, not the pipe's end.
    let said = Arc::new(AtomicBool::new(false));
    let (line_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    let saying = said.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(std::io::stderr(), "{line}");
            saying.store(true, Ordering::SeqCst);
            let _ = line_tx.send(());
        }
    });
    let status = child.wait().context("waiting for smolvm")?;
    // Its last words come before cellar's verdict, unless the pipe stays open and busy.
    let exited = Instant::now();
    while exited.elapsed() < crate::procs::EXIT_WAIT {
        match lines.recv_timeout(STDERR_QUIET) {
            Ok(()) => continue,
            Err(_) => break, // closed, or quiet
        }
    }
    // What it left running pulled from the server that stops now: it goes too. (What has
    // just exited is reaped first, so it is not counted as left running.)
    crate::procs::reap_orphans();
    if crate::procs::any_descendants() {
        crate::procs::stop_descendants(|| true);
        errln!("cellar: stopped what smolvm left running");
    }
    if status.success() && written(&args.output) == before {
        anyhow::bail!(
            "{} pack create exited 0 but wrote no {}",
            args.smolvm.display(),
            args.output.display()
        );
    }
    if status.success() {
        errln!(
            "cellar: packed {} into {}",
            reference,
            args.output.display()
        );
        return Ok(());
    }
    let how = match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
    };
    anyhow::bail!(
        "{} pack create {how} ({})",
        args.smolvm.display(),
        if said.load(Ordering::SeqCst) {
            "what it said is above"
        } else {
            "it said nothing"
        }
    )
}

/// What says a file was written: its inode and change time (None when there is no file).
/// Compared before and after smolvm runs, so an OUT left by an earlier run is not taken for
/// this one's.
fn written(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// smolvm names the sidecar `OUT.smolmachine` itself, and refuses an OUT named so.
fn names_the_sidecar(out: &Path) -> Option<String> {
    let name = out.file_name()?.to_str()?;
    let stub = name.strip_suffix(".smolmachine")?;
    let stub = match stub {
        "" => "NAME".into(),
        stub => out.with_file_name(stub).display().to_string(),
    };
    Some(format!(
        "names the sidecar, which smolvm names itself (and refuses this name): give -o {stub} \
         and it writes {stub} and {stub}.smolmachine"
    ))
}

/// The executable `program` names: a path, or a name looked up in PATH as the spawn will
/// (glibc's execvp: `/bin:/usr/bin` when PATH is unset).
fn find_program(program: &Path) -> Result<PathBuf, String> {
    let runnable = |p: &Path| {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: access(2) reads the NUL-terminated path and nothing else.
        let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        executable && std::fs::metadata(p).is_ok_and(|m| m.is_file())
    };
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return match runnable(program) {
            true => Ok(program.to_path_buf()),
            false if program.exists() => Err("not an executable file".into()),
            false => Err("no such file".into()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| runnable(p))
        .ok_or_else(|| format!("not found in PATH ({})", OsStr::new(&path).display()))
}

/// The address a client on this host reaches a server listening on `addr` at: loopback for
/// a wildcard, which is no address to connect to. IPv4's for `[::]` too, which takes IPv4
/// as well unless the system says otherwise (`bindv6only`): many image reference parsers
/// (skopeo's among them) refuse an IPv6 literal.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let v6_only =
        || std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "1");
    let ip = match addr {
        SocketAddr::V6(a) if a.ip().is_unspecified() && v6_only() => Ipv6Addr::LOCALHOST.into(),
        a if a.ip().is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        a => a.ip(),
    };
    SocketAddr::new(ip, addr.port())
}
