//! How the writers compress records: the frame size and zstd settings for chunk frames, and
//! the level for deltas. Ingest and gc's repack both use them, so a repacked frame is
//! compressed as a fresh one would be; the benches use them to measure what is stored.

use zstd::bulk::Compressor;
use zstd::stream::raw::CParameter;

/// New objects are compressed together in frames of about this many raw bytes. Twice zstd's
/// default window for the level: a frame is one window, so matches reach across all of it.
pub const FRAME_TARGET: usize = 2 << 20;

/// Level for a delta record (one object against its base). Deltas are few (one per changed
/// piece or directory), so they get zstd's default.
const DELTA_LEVEL: i32 = 3;

/// The largest window a delta may need: zstd's decoders accept up to 2^27 bytes without being
/// told to, so a record stays readable by any of them.
const DELTA_WINDOW_LOG_MAX: u32 = 27;

/// zstd's smallest window.
const DELTA_WINDOW_LOG_MIN: u32 = 10;

/// Past this much base, the level's own tables cannot index all of it (zstd loads only the
/// last `8 << hashLog` bytes of a prefix, 1 MiB at level 3), and long-distance matching
/// is what finds the rest.
const DELTA_LONG_FROM: usize = 1 << 20;

/// A compressor for chunk frames, to be reused frame after frame.
///
/// zstd's fast strategy (level 2) with a window that spans the whole frame, a 128 Ki-entry
/// match table and 5-byte minimum matches. On a Debian root filesystem this stores within
/// 0.5% of level 3 over 1 MiB frames (the setting before it) while compressing about 25%
/// faster: level 3's double hash tables cost more than a window twice as long gives back,
/// and compression is most of a cold ingest's CPU (BENCHMARKS.md, "Frames").
pub fn frame_compressor() -> std::io::Result<Compressor<'static>> {
    let mut z = Compressor::new(2)?;
    z.set_parameter(CParameter::WindowLog(FRAME_TARGET.trailing_zeros()))?;
    z.set_parameter(CParameter::HashLog(17))?;
    z.set_parameter(CParameter::MinMatch(5))?;
    Ok(z)
}

/// `raw` compressed against `base`, as `zstd --patch-from` does it: the base is the frame's
/// prefix, the window spans base and object so any of the base can be matched, and a large
/// base is indexed by long-distance matching. A large directory record changed in one entry
/// then costs about the change; as a plain dictionary only the base's last MiB was indexed,
/// and such a record cost most of its size again.
pub fn compress_delta(base: &[u8], raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut z = Compressor::new(DELTA_LEVEL)?;
    let span = (base.len() + raw.len()).max(1);
    let window_log = span.next_power_of_two().trailing_zeros();
    z.set_parameter(CParameter::WindowLog(
        window_log.clamp(DELTA_WINDOW_LOG_MIN, DELTA_WINDOW_LOG_MAX),
    ))?;
    if base.len() > DELTA_LONG_FROM {
        z.set_parameter(CParameter::EnableLongDistanceMatching(true))?;
    }
    z.context_mut().ref_prefix(base).map_err(zstd_error)?;
    z.compress(raw)
}

/// The bytes that `compress_delta` made `stored` from, given the same base, decoded into
/// `out` (whose capacity is the most that is read). Its prefix is the base's raw content, as
/// a dictionary without zstd's header is read: deltas written when bases were given as
/// dictionaries read the same.
pub fn decompress_delta(base: &[u8], stored: &[u8], mut out: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut dctx = zstd::zstd_safe::DCtx::create();
    dctx.ref_prefix(base).map_err(zstd_error)?;
    dctx.decompress(&mut out, stored).map_err(zstd_error)?;
    Ok(out)
}

fn zstd_error(code: zstd::zstd_safe::ErrorCode) -> std::io::Error {
    std::io::Error::other(zstd::zstd_safe::get_error_name(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zstd::bulk::Decompressor;

    /// A directory-record-like object of `n` entries, one of them changed: the delta against
    /// the original holds about the change, however large the base.
    #[test]
    fn a_small_change_to_a_large_object_costs_about_the_change() {
        let entries = |changed: usize| -> Vec<u8> {
            (0..200_000u64)
                .flat_map(|i| {
                    // Unlike neighbours, so that the object does not compress away by itself.
                    let h = blake3::hash(&i.to_le_bytes());
                    let mut e = h.as_bytes()[..12].to_vec();
                    e.push(if i as usize == changed { 1 } else { 0 });
                    e
                })
                .collect()
        };
        let (base, raw) = (entries(usize::MAX), entries(150_000));
        assert!(base.len() > 2 << 20);
        let delta = compress_delta(&base, &raw).unwrap();
        // About 3 KiB here (long-distance matches are sampled, not exhaustive); the base as a
        // dictionary made 2 MB of it.
        assert!(delta.len() < raw.len() / 500, "{} bytes", delta.len());
        assert_eq!(
            decompress_delta(&base, &delta, Vec::with_capacity(raw.len())).unwrap(),
            raw
        );
        // Not decodable against another base.
        let other = entries(7);
        assert_ne!(
            decompress_delta(&other, &delta, Vec::with_capacity(raw.len())).ok(),
            Some(raw)
        );
    }

    /// What a base given as a dictionary (the earlier writers) made reads back the same.
    #[test]
    fn deltas_made_with_the_base_as_a_dictionary_still_read() {
        let base: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i * 7).to_le_bytes())
            .collect();
        let mut raw = base.clone();
        raw[1000] ^= 1;
        let old = Compressor::with_dictionary(DELTA_LEVEL, &base)
            .and_then(|mut c| c.compress(&raw))
            .unwrap();
        assert_eq!(
            decompress_delta(&base, &old, Vec::with_capacity(raw.len())).unwrap(),
            raw
        );
        // And the decoder of those writers reads what is written now (small bases).
        let new = compress_delta(&base, &raw).unwrap();
        let read = Decompressor::with_dictionary(&base)
            .and_then(|mut d| d.decompress(&new, raw.len()))
            .unwrap();
        assert_eq!(read, raw);
    }
}
