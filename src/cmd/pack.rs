//! `cellar pack`: serve the snapshot's image in-process and run `smolvm pack create` on it, so
//! smolvm's agent pulls the layers straight from the store. Nothing is left running after,
//! also when cellar is interrupted: smolvm, and whatever it started, is stopped first.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

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
    if let Some(why) = why {
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
    // The manifest first: its digest names the image, and its layers' digests are then
    // known (synthesized ones are computed here, once).
    let image = lease.image(&snap, &opts)?;
    let left_out = super::warn_left_out(&store, &snap)?;
    let shared = Arc::new(Shared::new(store, opts));
    let server = Server::start(shared, &args.listen)?;
    let host = args
        .pull_host
        .clone()
        .unwrap_or_else(|| server.addr().to_string());
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

fn run_smolvm(args: &PackArgs, reference: &str, stopping: &Mutex<bool>) -> anyhow::Result<()> {
    crate::procs::adopt_orphans();
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
    // smolvm's stderr goes on to ours as it comes (the error below does not repeat it).
    let mut said = false;
    let stderr = child.stderr.take().expect("piped stderr");
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        let _ = writeln!(std::io::stderr(), "{line}");
        said = true;
    }
    let status = child.wait().context("waiting for smolvm")?;
    if status.success() && !args.output.exists() {
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
        if said {
            "what it said is above"
        } else {
            "it said nothing"
        }
    )
}
