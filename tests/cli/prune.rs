//! `rm` and `prune`: forgetting snapshots by name or by retention policy.

use crate::common::*;
use crate::trees::portable_tree;

/// `count` snapshots of lineage `name`, each of a slightly different tree; their short ids.
fn lineage(store: &TestStore, name: &str, count: usize) -> Vec<String> {
    let root = store.scratch(&format!("tree-{name}"));
    portable_tree(&root);
    (0..count)
        .map(|i| {
            write_file(
                &root.join("etc/generation"),
                format!("{name} {i}\n").as_bytes(),
            );
            let stream = tar_of_dir(&root);
            store.snapshot_bytes(&stream, name)
        })
        .collect()
}

fn ids(store: &TestStore) -> Vec<String> {
    store.listed("short_id")
}

#[test]
fn rm_forgets_exactly_what_it_is_given() {
    let store = TestStore::new();
    let vm = lineage(&store, "vm", 3);
    let packs = store.pack_files().len();

    // One bad argument forgets nothing.
    let out = store.run(&["rm", &vm[1], "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(ids(&store), vm);

    store.ok(&["rm", &vm[1]]);
    assert_eq!(ids(&store), vec![vm[0].clone(), vm[2].clone()]);
    // The tombstone went to a pack, so a rebuilt index forgets it too.
    assert_eq!(store.pack_files().len(), packs + 1);
    // What is left still exports, and NAME still means the newest.
    for id in [&vm[0], &vm[2]] {
        let shown = store.json(&["show", id, "--json"]);
        assert_eq!(
            sha256_hex(&store.export(id)),
            shown["sha256"].as_str().unwrap()
        );
    }
    assert_eq!(
        store.json(&["show", "vm", "--json"])["short_id"],
        vm[2].as_str()
    );
    let json = store.json(&["rm", "vm~1", "--json"]);
    assert_eq!(json[0]["short_id"], vm[0].as_str());
    assert_eq!(ids(&store), vec![vm[2].clone()]);
}

#[test]
fn prune_keeps_by_policy_per_lineage() {
    let store = TestStore::new();
    let vm = lineage(&store, "vm", 4);
    let db = lineage(&store, "db", 2);

    // Dry run: says what it would do, changes nothing.
    let plan = store.json(&["prune", "--keep-last", "2", "--dry-run", "--json"]);
    assert_eq!(plan["dry_run"], true);
    let short = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| e["short_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(short(&plan["drop"]), vec![vm[0].clone(), vm[1].clone()]);
    assert_eq!(short(&plan["keep"]).len(), 4);
    assert!(plan["keep"][0]["reasons"][0]
        .as_str()
        .unwrap()
        .starts_with("last"));
    assert_eq!(ids(&store).len(), 6);

    // Human output names each snapshot and why.
    let text = store.ok(&["prune", "--name", "vm", "--keep-last", "3", "--dry-run"]);
    assert!(text.contains(&format!("drop {} vm", vm[0])), "{text}");
    assert!(
        text.contains(&format!("keep {} vm", vm[3])) && text.contains("(last"),
        "{text}"
    );

    // A lineage with no snapshots: said, and nothing suggests there is anything to reclaim.
    let out = store.run(&["prune", "--name", "nosuch", "--keep-last", "1"]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("no snapshots named nosuch"), "{err}");
    assert!(
        err.contains("0 kept, 0 forgotten") && !err.contains("gc"),
        "{err}"
    );

    // For real: the newest of each lineage by --keep-last 1 --keep-daily 1.
    store.ok(&["prune", "--keep-last", "1", "--keep-daily", "1"]);
    let mut left = ids(&store);
    left.sort();
    let mut want = vec![vm[3].clone(), db[1].clone()];
    want.sort();
    assert_eq!(left, want);
    assert!(!store.export(&vm[3]).is_empty());
}

#[test]
fn prune_needs_a_policy() {
    let store = TestStore::new();
    lineage(&store, "vm", 1);
    for args in [
        &["prune"][..],
        &["prune", "--keep-last", "0"],
        &["prune", "--keep-daily", "-2"],
        &["prune", "--name", "Bad", "--keep-last", "1"],
        &["prune", "--keep-within", "7w"],
        &["prune", "--keep-within", "0d", "--keep-yearly", "0"],
        &["prune", "--keep-within-daily", "0h"],
        &["prune", "--keep-within-daily", "2"],
    ] {
        let out = store.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(ids(&store).len(), 1);
}

/// restic's `--keep-yearly` and `--keep-within`, and 0 as no rule (so a script can pass every
/// option with some of them 0).
#[test]
fn prune_keeps_yearly_and_within_and_takes_0_as_no_rule() {
    let store = TestStore::new();
    let vm = lineage(&store, "vm", 3);
    let plan = store.json(&[
        "prune",
        "--keep-last",
        "0",
        "--keep-yearly",
        "1",
        "--dry-run",
        "--json",
    ]);
    let year = &plan["keep"][0]["created"].as_str().unwrap()[..4];
    assert_eq!(plan["keep"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["keep"][0]["short_id"], vm[2].as_str());
    assert_eq!(
        plan["keep"][0]["reasons"],
        serde_json::json!([format!("yearly {year}")])
    );
    // Taken seconds apart: all within an hour of the newest.
    let plan = store.json(&["prune", "--keep-within", "1h", "--dry-run", "--json"]);
    assert!(plan["drop"].as_array().unwrap().is_empty(), "{plan}");
    for kept in plan["keep"].as_array().unwrap() {
        assert_eq!(kept["reasons"], serde_json::json!(["within 1h"]));
    }
    let text = store.ok(&["prune", "--keep-within", "1h", "--dry-run"]);
    assert!(text.contains("(within 1h)"), "{text}");
    // --keep-within-hourly: the newest of the hour they were taken in (two, should the
    // seconds between them cross an hour).
    let plan = store.json(&["prune", "--keep-within-hourly", "1d", "--dry-run", "--json"]);
    let kept = plan["keep"].as_array().unwrap();
    assert_eq!(kept[kept.len() - 1]["short_id"], vm[2].as_str(), "{plan}");
    let hour = &kept[kept.len() - 1]["created"].as_str().unwrap()[..13].replace('T', " ");
    assert_eq!(
        kept[kept.len() - 1]["reasons"],
        serde_json::json!([format!("hourly within 1d {hour}h")])
    );
    assert!(kept.len() <= 2 && plan["drop"].as_array().unwrap().len() == 3 - kept.len());
    // -1 is no limit, as in restic: every snapshot is among the newest "all".
    let plan = store.json(&["prune", "--keep-last", "-1", "--dry-run", "--json"]);
    assert_eq!(plan["keep"].as_array().unwrap().len(), 3, "{plan}");
}

/// restic's `--keep-tag`, as labels: a snapshot carrying one is kept whatever else the rules
/// drop, and `--keep-label` alone is a policy.
#[test]
fn prune_keeps_what_carries_a_label() {
    let store = TestStore::new();
    let root = store.scratch("tree");
    portable_tree(&root);
    let snap = |n: usize, labels: &[&str]| {
        write_file(&root.join("etc/generation"), format!("{n}\n").as_bytes());
        let mut args = vec!["snapshot", "--name", "vm"];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.push("-");
        let out = store.run_stdin(&args, &tar_of_dir(&root));
        assert_success(&out, &args);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let release = snap(0, &["release=1.0"]);
    let pinned = snap(1, &["pin=", "owner=ci"]);
    let plain = snap(2, &[]);
    let newest = snap(3, &["release=2.0"]);

    // A label no snapshot of a lineage carries (a typo, or another lineage's) would forget
    // it whole: refused, dry run or not, as restic's `forget` refuses since 0.17.
    let other = lineage(&store, "db", 1);
    for args in [
        &["prune", "--keep-label", "pni"][..],
        &["prune", "--keep-label", "pin", "--dry-run"],
        &["prune", "--keep-label", "pin"],
    ] {
        let out = store.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("would forget every snapshot of db")
                && stderr(&out).contains("nothing was forgotten"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(ids(&store).len(), 5);
    store.ok(&["rm", &other[0]]);

    let plan = store.json(&["prune", "--keep-label", "pin", "--dry-run", "--json"]);
    assert_eq!(plan["keep"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["keep"][0]["short_id"], pinned.as_str());
    assert_eq!(plan["keep"][0]["reasons"], serde_json::json!(["label pin"]));

    let out = store.run(&["prune", "--keep-label", "=1.0", "--keep-last", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(ids(&store).len(), 4);

    store.ok(&["prune", "--keep-last", "1", "--keep-label", "release=1.0"]);
    assert_eq!(ids(&store), vec![release.clone(), newest.clone()]);
    let text = store.ok(&["prune", "--keep-label", "release", "--dry-run"]);
    assert!(
        text.contains(&format!("keep {release} vm")) && text.contains("(label release)"),
        "{text}"
    );
    assert!(!text.contains(&plain), "{text}");
}
