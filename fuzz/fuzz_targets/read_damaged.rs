//! Fuzz the read side against damaged packs: each input is a list of damage operations on the
//! pack files of a store of three real snapshots, and every read path must give the pristine
//! bytes or fail with `Error::Corrupt`. The property, its checks and the input format:
//! `cellar_store::fuzzing::damage`.
#![no_main]

use std::sync::Mutex;

use cellar_store::fuzzing::damage::DamageHarness;
use libfuzzer_sys::fuzz_target;

static HARNESS: Mutex<Option<DamageHarness>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut h = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    h.get_or_insert_with(DamageHarness::new).check(data);
});
