//! How the writers compress records: the frame size and zstd settings for chunk frames, and
//! the level for deltas. Ingest and gc's repack both use them, so a repacked frame is
//! compressed as a fresh one would be; the benches use them to measure what is stored.

use zstd::bulk::Compressor;
use zstd::stream::raw::CParameter;

/// New objects are compressed together in frames of about this many raw bytes. Twice zstd's
/// default window for the level: a frame is one window, so matches reach across all of it.
pub const FRAME_TARGET: usize = 2 << 20;

/// Level for a delta record (one object against its base as a dictionary). Deltas are small
/// and few, so they get zstd's default.
pub const DELTA_LEVEL: i32 = 3;

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
