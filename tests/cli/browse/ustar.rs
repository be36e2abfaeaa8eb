//! Hand-made ustar streams: member orders and names no tar writer produces, and big streams
//! built quickly.

/// A ustar header written by hand (uid/gid 0, fixed mtime), with a correct checksum.
fn ustar_header(name: &[u8], typeflag: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    assert!(name.len() <= 100 && link.len() <= 100);
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"13000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Append one member (header and padded data) to a hand-made stream.
pub(super) fn member(
    out: &mut Vec<u8>,
    name: &[u8],
    typeflag: u8,
    data: &[u8],
    link: &[u8],
    mode: u32,
) {
    out.extend_from_slice(&ustar_header(name, typeflag, data.len() as u64, link, mode));
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

pub(super) fn end_of_archive(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}
