//! What wraps a stream, told from its first bytes: gzip, zstd or nothing.

use crate::tar::header::{Header, BLOCK};

/// How many bytes `codec_of` wants to see: a whole first header.
pub(crate) const SNIFF: usize = BLOCK;

/// The compression around a stream that starts with `start` (up to `SNIFF` bytes), if any.
/// A first block that is a tar header with a valid checksum is tar, whatever its member's
/// name starts with (GNU tar lists a member named `\x1f\x8b…`). zstd may start with a
/// skippable frame, as `pzstd` writes one.
pub(crate) fn codec_of(start: &[u8]) -> Option<&'static str> {
    if let Ok(block) = <&[u8; BLOCK]>::try_from(start.get(..BLOCK).unwrap_or_default()) {
        if Header(block).checksum_ok().is_ok() {
            return None;
        }
    }
    if start.starts_with(&[0x1f, 0x8b]) {
        return Some("gzip");
    }
    let magic = u32::from_le_bytes(start.get(..4)?.try_into().ok()?);
    // A frame, or a skippable frame (0x184D2A50 to 0x184D2A5F).
    (magic == 0xFD2F_B528 || magic & 0xFFFF_FFF0 == 0x184D_2A50).then_some("zstd")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_are_told_by_their_magic_and_a_tar_header_by_its_checksum() {
        assert_eq!(codec_of(&[0x1f, 0x8b, 8, 0]), Some("gzip"));
        assert_eq!(codec_of(&[0x28, 0xb5, 0x2f, 0xfd]), Some("zstd"));
        assert_eq!(
            codec_of(&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0]),
            Some("zstd")
        );
        assert_eq!(codec_of(&[0x5f, 0x2a, 0x4d, 0x18]), Some("zstd"));
        assert_eq!(codec_of(&[0x60, 0x2a, 0x4d, 0x18]), None);
        assert_eq!(codec_of(&[0x1f, 0x8b]), Some("gzip"));
        assert_eq!(codec_of(&[0x1f]), None);
        assert_eq!(codec_of(&[0; BLOCK]), None);

        // A ustar header for a member named "\x1f\x8b-x": tar, not gzip.
        let mut h = [0u8; BLOCK];
        h[..4].copy_from_slice(b"\x1f\x8b-x");
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..265].copy_from_slice(b"ustar\x0000");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        assert_eq!(codec_of(&h), None);
        // The same bytes with a wrong checksum are what they start like.
        h[148] = b'7';
        assert_eq!(codec_of(&h), Some("gzip"));
    }
}
