//! The fuzz targets' properties on every `cargo test`: real tar streams from GNU tar, bsdtar
//! and busybox tar (the fuzz seeds, `fuzz/make_seeds.sh`), each damaged in a fixed series of
//! ways, through the ingest; and a fixed series of damage to a store's packs, through every
//! read path. The series are repeatable (xorshift from fixed seeds), so a failure names an
//! input that fails again.

use std::path::Path;
use std::process::Command;

use super::damage::DamageHarness;
use super::ingest::{IngestHarness, Outcome};
use super::xorshift;

/// Damaged variants of each seed stream.
const MUTANTS_PER_SEED: usize = 32;
/// Random damage inputs for the read side, after the targeted ones.
const DAMAGE_INPUTS: usize = 100;

/// The seed streams, by file name.
fn seeds(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/make_seeds.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("run make_seeds.sh");
    assert!(
        out.status.success(),
        "make_seeds.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seeds: Vec<(String, Vec<u8>)> = super::files_under(dir)
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    seeds.sort();
    // Every writer must be there: a missing tool fails loudly (scripts/test installs them).
    for want in [
        "gnutar-pax.tar",
        "bsdtar-pax.tar",
        "busybox.tar",
        "sparse-pax10.tar",
    ] {
        assert!(
            seeds.iter().any(|(n, b)| n == want && !b.is_empty()),
            "seed {want} was not made (are tar, bsdtar and busybox installed? scripts/test \
             installs them)"
        );
    }
    seeds
}

/// Where a ustar header keeps each field: (offset, length).
const FIELDS: [(usize, usize); 13] = [
    (0, 100),   // name
    (100, 8),   // mode
    (108, 8),   // uid
    (116, 8),   // gid
    (124, 12),  // size
    (136, 12),  // mtime
    (156, 1),   // typeflag
    (157, 100), // linkname
    (257, 8),   // magic and version
    (265, 32),  // uname
    (329, 8),   // devmajor
    (337, 8),   // devminor
    (345, 155), // prefix (GNU: atime, ctime, sparse map, real size)
];

/// Bytes a header field is worth trying: digits, terminators, base-256 markers, type flags.
const VALUES: &[u8] = b"0179 \0\x80\xffxgLKSD5/.";

/// Give a header block a valid checksum, so the damage gets past the first check.
fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// `seed` with one to three kinds of damage: what a fuzzer's first mutations, a bad disk or
/// a broken pipe do to a real stream.
fn mutate(seed: &[u8], rng: &mut u64) -> Vec<u8> {
    let mut s = seed.to_vec();
    for _ in 0..1 + xorshift(rng) % 3 {
        if s.is_empty() {
            break;
        }
        let r = xorshift(rng);
        let at = (xorshift(rng) % s.len() as u64) as usize;
        match r % 6 {
            0 => s[at] ^= 1 << ((r >> 8) % 8),
            1 => {
                // A header field set to something odd, with the checksum made right again.
                let block = at / 512 * 512;
                if block + 512 > s.len() {
                    continue;
                }
                let (off, len) = FIELDS[(r >> 8) as usize % FIELDS.len()];
                let at = block + off + (r >> 16) as usize % len;
                s[at] = VALUES[(r >> 32) as usize % VALUES.len()];
                fix_checksum(&mut s[block..block + 512]);
            }
            2 => s.truncate(at),
            3 => {
                let n = 1 + (r >> 8) as usize % 700;
                let byte = (r >> 24) as u8;
                s.splice(at..at, std::iter::repeat_n(byte, n));
            }
            4 => {
                let end = (at + 1 + (r >> 8) as usize % 1100).min(s.len());
                s.drain(at..end);
            }
            _ => {
                // One 512-byte block copied over another: a header where data was, or twice.
                let blocks = s.len() / 512;
                if blocks < 2 {
                    continue;
                }
                let from = (r >> 8) as usize % blocks * 512;
                let to = (r >> 32) as usize % blocks * 512;
                let copy = s[from..from + 512].to_vec();
                s[to..to + 512].copy_from_slice(&copy);
            }
        }
    }
    s
}

#[test]
fn real_tar_streams_and_damaged_ones_are_stored_exactly_or_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds(&dir.path().join("seeds"));
    let mut harness = IngestHarness::new();
    let mut rng = 0x5eed_cafe_f00d_1234u64;
    let (mut stored, mut refused) = (0, 0);
    for (name, seed) in &seeds {
        assert_eq!(harness.check(seed), Outcome::Stored, "seed {name}");
        for i in 0..MUTANTS_PER_SEED {
            let input = mutate(seed, &mut rng);
            // A panic names the input: the same series makes it again.
            eprintln!("{name} mutant {i}: {} bytes", input.len());
            match harness.check(&input) {
                Outcome::Stored => stored += 1,
                Outcome::Refused => refused += 1,
            }
        }
    }
    // The series reaches both sides: damage tar takes, and damage it refuses.
    eprintln!("mutants: {stored} stored, {refused} refused");
    assert!(
        stored >= seeds.len() && refused >= seeds.len(),
        "{stored} / {refused}"
    );
}

#[test]
fn every_read_of_damaged_packs_gives_the_pristine_bytes_or_a_corrupt_error() {
    let mut harness = DamageHarness::new();
    // Pristine: every read succeeds and verify finds nothing.
    assert_eq!(harness.check(&[]), 0);
    // Each kind of damage, once in every pack: a byte anywhere, a record header's byte flipped
    // and set, a payload's byte, a truncation.
    let mut hurt = 0;
    for pack in 0..harness.pack_count() as u8 {
        for (kind, a, b, c, v) in [
            (0u8, 0x12, 0x34, 0x56, 0x01),
            (10, 1, 0, 3, 0x80),
            (13, 2, 0, 9, 0x00),
            (15, 0, 0, 40, 0x20),
            (14, 0x00, 0x40, 0x00, 0),
        ] {
            if harness.check(&[kind << 4 | pack, a, b, c, v]) > 0 {
                hurt += 1;
            }
        }
    }
    let mut rng = 0x0da3_a9e5_0bad_d15c_u64;
    for _ in 0..DAMAGE_INPUTS {
        let ops: Vec<u8> = (0..5 * (1 + xorshift(&mut rng) % 4))
            .map(|_| xorshift(&mut rng) as u8)
            .collect();
        eprintln!("damage {ops:02x?}");
        if harness.check(&ops) > 0 {
            hurt += 1;
        }
    }
    // Most damage lands in data some read needs; the reads must have met it.
    eprintln!("{hurt} inputs failed some read");
    assert!(hurt >= DAMAGE_INPUTS / 2, "{hurt}");
}
