//! gc beside an ingest that commits between its mark and its condemn: the new snapshot's
//! chunks are live, however much of it the mark already saw.

use super::*;

/// A forgotten snapshot's pieces and records stay live as the delta bases of its successor's,
/// without their chunks. A snapshot of the same stream committed after the mark reaches
/// those very objects: gc must walk them for it, not take them as walked.
#[test]
fn a_snapshot_of_a_forgotten_ones_stream_committed_during_gc_keeps_its_chunks() {
    let store = TestStore::new();
    let snaps = lineage(&store, 2, 3_000_000);
    let (forgotten, stream) = &snaps[0];
    store.ok(&["rm", forgotten]);
    let gc = store.stopped_at(&["gc", "--grace", "0"], "gc:after-mark");
    let again = store.snapshot_bytes(stream, "vm");
    resume(&gc);
    let out = gc.wait_with_output().unwrap();
    assert_success(&out, &["gc", "--grace", "0"]);
    store.ok(&["verify", "--data"]);
    assert!(store.export(&again) == *stream, "export of {again} differs");
}
