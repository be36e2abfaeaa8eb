//! Where the store is: `--store`, `CELLAR_STORE`, the XDG default, and what is no store.

use super::*;

#[test]
fn an_empty_cellar_store_is_unset() {
    let ts = TestStore::new();
    let data = ts.scratch("xdg");
    let out = std::process::Command::new(cellar_bin())
        .arg("list")
        .env("CELLAR_STORE", "")
        .env("XDG_DATA_HOME", &data)
        .output()
        .unwrap();
    // The default store is used (there is none there yet), not an empty --store.
    let err = stderr(&out);
    assert!(
        err.contains("no store at") && err.contains("xdg/cellar"),
        "{err}"
    );
    assert!(!err.contains("--store"), "{err}");
}

/// The XDG spec has a relative XDG_DATA_HOME ignored; a relative or empty HOME is no home
/// either. Either way the store would depend on where cellar runs.
#[test]
fn relative_xdg_data_home_and_home_are_ignored() {
    let ts = TestStore::new();
    let run = ts.scratch("cwd");
    let home = ts.scratch("home");
    std::fs::create_dir_all(&run).unwrap();
    let list = |xdg: &str, home: &std::ffi::OsStr| {
        std::process::Command::new(cellar_bin())
            .arg("list")
            .current_dir(&run)
            .env_remove("CELLAR_STORE")
            .env("XDG_DATA_HOME", xdg)
            .env("HOME", home)
            .output()
            .unwrap()
    };
    let out = list("relxdg", home.as_os_str());
    let err = stderr(&out);
    let want = home.join(".local/share/cellar");
    assert!(
        err.contains(&format!("no store at {}", want.display())),
        "{err}"
    );
    for bad_home in ["", "relhome"] {
        let out = list("relxdg", bad_home.as_ref());
        assert_eq!(out.status.code(), Some(1), "HOME={bad_home:?}");
        assert!(
            stderr(&out).contains("HOME is not an absolute path"),
            "{}",
            stderr(&out)
        );
    }
    let snap = std::process::Command::new(cellar_bin())
        .args(["snapshot", "-"])
        .current_dir(&run)
        .env_remove("CELLAR_STORE")
        .env("XDG_DATA_HOME", "relxdg")
        .env("HOME", "relhome")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(snap.status.code(), Some(1), "{}", stderr(&snap));
    assert_eq!(
        std::fs::read_dir(&run).unwrap().count(),
        0,
        "a store was made under the working directory"
    );
}

/// A file where the store should be is no store: every command says so (exit 2) and leaves
/// it alone; and a snapshot whose source cannot be opened makes no store.
#[test]
fn a_file_is_no_store_and_a_failed_snapshot_makes_none() {
    let ts = TestStore::new();
    let file = ts.scratch("afile");
    write_file(&file, b"not a store");
    for args in [&["list"][..], &["snapshot", "-"], &["gc"]] {
        let out = cellar_at(&file, args);
        let err = exits(&out, args, 2);
        assert!(
            err.contains("not a directory (a store is a directory)"),
            "{err}"
        );
    }
    // Named by where it came from.
    let out = std::process::Command::new(cellar_bin())
        .arg("list")
        .env("CELLAR_STORE", &file)
        .output()
        .unwrap();
    let err = exits(&out, &["list", "(CELLAR_STORE)"], 2);
    assert!(err.contains("CELLAR_STORE "), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a store");
    // Nor below one: a usage error too, and nothing made.
    let below = file.join("sub");
    for args in [&["list"][..], &["snapshot", "-"]] {
        let err = exits(&cellar_at(&below, args), args, 2);
        assert!(err.contains("not a directory"), "{err}");
    }

    let missing = ts.scratch("missing.tar");
    let out = ts.run(&["snapshot", missing.to_str().unwrap()]);
    let err = exits(&out, &["snapshot"], 1);
    assert!(err.contains("missing.tar"), "{err}");
    assert!(
        !ts.path().exists(),
        "a snapshot that failed to open its source made a store"
    );
}

/// An export, restore or mount aimed into the store (straight, through `..`, or through a
/// symlink to where nothing is yet) is a usage error: it would overwrite the index or a pack.
#[test]
fn writing_into_the_store_is_refused() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    let store = ts.path();
    let link = ts.scratch("link.tar");
    std::os::unix::fs::symlink(store.join("packs/new.tar"), &link).unwrap();
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let via_dots = s(ts.scratch("elsewhere/../store/cellar.db"));
    std::fs::create_dir(ts.scratch("elsewhere")).unwrap();
    for args in [
        vec!["export", &id, "-o", &s(store.join("cellar.db"))],
        vec!["export", &id, "-o", &via_dots],
        vec!["export", &id, "-o", &s(link.clone())],
        vec!["export", &id, "--format", "oci", "-o", &s(store.clone())],
        vec!["restore", &id, &s(store.join("restored"))],
        // Through a directory that does not exist yet, which restore or export would make.
        vec!["restore", &id, &s(ts.scratch("nope/../store")), "--force"],
        vec![
            "export",
            &id,
            "--format",
            "oci",
            "-o",
            &s(ts.scratch("nope/../store/layout")),
        ],
        vec!["mount", &s(store.join("packs"))],
    ] {
        let err = fails(&ts, &args, 2);
        assert!(err.contains("inside the store"), "{args:?}: {err}");
    }
    assert!(!store.join("packs/new.tar").exists());
    assert!(!store.join("restored").exists());
    assert!(!store.join("layout").exists() && !ts.scratch("nope").exists());
    ts.ok(&["verify"]);
    assert!(ts.ok(&["list"]).contains("web"));
    // Beside the store is fine.
    ts.ok(&["export", &id, "-o", &s(ts.scratch("store.tar"))]);
}

/// Another path to the store's directories, a bind mount of the store or of its packs, is
/// inside the store too: the paths differ, the directories are the same (device and inode).
#[test]
fn writing_into_the_store_through_a_bind_mount_is_refused() {
    let ts = TestStore::new();
    let id = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let (bound, packs) = (ts.scratch("bound"), ts.scratch("packs"));
    for (from, to) in [(ts.path(), &bound), (ts.path().join("packs"), &packs)] {
        std::fs::create_dir(to).unwrap();
        sh(&format!(
            "mount --bind '{}' '{}'",
            from.display(),
            to.display()
        ));
    }
    let (db, pack, restored) = (
        s(bound.join("cellar.db")),
        s(packs.join("new.tar")),
        s(bound.join("restored")),
    );
    let whole = s(bound.clone());
    let results: Vec<_> = [
        vec!["export", &id, "-o", &db],
        vec!["export", &id, "-o", &pack],
        vec!["restore", &id, &whole, "--force"],
        vec!["restore", &id, &restored],
    ]
    .into_iter()
    .map(|args| (ts.run(&args), args))
    .collect();
    // Unmounted before anything is asserted, so that a failure leaves no mount behind.
    for to in [&bound, &packs] {
        sh(&format!("umount '{}'", to.display()));
    }
    for (out, args) in results {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("inside the store"), "{args:?}: {err}");
    }
    ts.ok(&["verify"]);
    assert!(ts.ok(&["list"]).contains("web"));
}

/// A restore or mount at a directory that holds the store: a mount there would hide the store
/// from cellar, and a restore is refused when the snapshot has something where the store is.
#[test]
fn a_directory_holding_the_store_is_refused_where_it_would_reach_it() {
    let ts = TestStore::new();
    let above = ts.path().parent().unwrap().to_path_buf();
    let name = ts.path().file_name().unwrap().to_str().unwrap().to_string();
    let src = ts.scratch("src");
    write_file(&src.join(&name).join("cellar.db"), b"not an index\n");
    write_file(&src.join("sub").join(&name).join("db"), b"nor this\n");
    write_file(&src.join("etc/hostname"), b"web\n");
    let dir = src.to_str().unwrap();
    let reaching = ts.snapshot_bytes(&tar_stream(&["tar", "-cf", "-", "-C", dir, "."]), "web");
    let harmless = ts.snapshot_bytes(&tar_of(&tree(&ts, 1)), "web");
    let above_s = above.to_str().unwrap();

    let err = fails(&ts, &["restore", &reaching, above_s, "--force"], 2);
    assert!(
        err.contains("holds the store") && err.contains(&format!("/{name}")),
        "{err}"
    );
    // Through --path, what lands in DIR is the subtree's contents.
    let err = fails(
        &ts,
        &["restore", &reaching, above_s, "--force", "--path", "/sub"],
        2,
    );
    assert!(err.contains(&format!("/sub/{name}")), "{err}");
    let err = fails(&ts, &["mount", above_s], 2);
    assert!(err.contains("holds the store"), "{err}");
    // The same directory by another path, a bind mount of it, holds the store too.
    let bound = ts.scratch("bound-above");
    std::fs::create_dir(&bound).unwrap();
    sh(&format!("mount --bind '{above_s}' '{}'", bound.display()));
    let bound_s = bound.to_str().unwrap();
    let through_bind = [
        ts.run(&["restore", &reaching, bound_s, "--force"]),
        ts.run(&["mount", bound_s]),
    ];
    sh(&format!("umount '{bound_s}'"));
    for out in through_bind {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("holds the store"), "{}", stderr(&out));
    }
    ts.ok(&["verify"]);
    assert!(!above.join("etc").exists(), "a refused restore wrote");

    // Nothing of this snapshot is where the store is: restored beside it.
    ts.ok(&["restore", &harmless, above_s, "--force"]);
    assert_eq!(
        std::fs::read(above.join("etc/hostname")).unwrap(),
        b"host-1\n"
    );
    ts.ok(&["verify"]);
}

/// A store that cannot be made where it is asked for says so, naming the store, not only the
/// first directory it could not make (here as a user who may not write there).
#[test]
fn a_store_that_cannot_be_made_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let locked = tmp.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    for (path, mode) in [(tmp.path(), 0o755), (&locked, 0o555)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let tree = tmp.path().join("tree");
    crate::trees::portable_tree(&tree);
    let stream = tmp.path().join("s.tar");
    std::fs::write(&stream, tar_of_dir(&tree)).unwrap();
    std::fs::set_permissions(&stream, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = locked.join("store");
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            cellar_bin(),
        ])
        .arg("--store")
        .arg(&store)
        .arg("snapshot")
        .arg(&stream)
        .env_remove("CELLAR_STORE")
        .output()
        .unwrap();
    let err = exits(&out, &["snapshot", "(as nobody)"], 1);
    let want = format!("cannot create the store at {}: ", store.display());
    assert!(
        err.contains(&want) && err.contains("Permission denied"),
        "{err}"
    );
}
