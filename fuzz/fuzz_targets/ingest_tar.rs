//! Fuzz the tar ingest: any byte stream given to `Store::ingest` must be refused with an error
//! that records nothing, or be stored so that `export` gives back exactly the (decompressed)
//! stream. The property and its checks: `cellar_store::fuzzing::ingest`.
#![no_main]

use std::sync::Mutex;

use cellar_store::fuzzing::ingest::IngestHarness;
use libfuzzer_sys::fuzz_target;

static HARNESS: Mutex<Option<IngestHarness>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut h = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    h.get_or_insert_with(IngestHarness::new).check(data);
});
