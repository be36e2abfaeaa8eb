//! Tar streams made by hand, block by block, for what no tar writer makes: odd headers, PAX
//! records of any kind, devices Linux cannot hold.

/// A ustar header written by hand (uid/gid 0, fixed mtime), with a correct checksum.
pub fn ustar_header(name: &[u8], typeflag: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
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
    set_checksum(&mut h);
    h
}

/// Recompute a header block's checksum (unsigned sum, checksum field counted as spaces).
pub fn set_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block[..512].iter().map(|&b| b as u32).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Append one member (header and padded data) to a hand-made stream.
pub fn member(out: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8], link: &[u8], mode: u32) {
    out.extend_from_slice(&ustar_header(name, typeflag, data.len() as u64, link, mode));
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// A PAX `x` header carrying `records`, to precede the next member.
pub fn pax(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
    pax_header(out, b'x', records);
}

/// A PAX header of `typeflag` (`x` local, `g` global) carrying `records`.
pub fn pax_header(out: &mut Vec<u8>, typeflag: u8, records: &[(&str, &[u8])]) {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = [k.as_bytes(), b"=", v, b"\n"].concat();
        // The length counts itself: find the fixed point.
        let mut len = body.len() + 2;
        while format!("{len} ").len() + body.len() != len {
            len = format!("{len} ").len() + body.len();
        }
        data.extend_from_slice(format!("{len} ").as_bytes());
        data.extend_from_slice(&body);
    }
    member(out, b"./PaxHeaders/x", typeflag, &data, b"", 0o644);
}

pub fn end_of_archive(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

/// Char devices `major4096` (4096, 0) and `minor2e40` (1, 2^40 in base-256), whose numbers
/// Linux's dev_t cannot hold, and `null` (1, 3).
pub fn devices_linux_cannot_hold() -> Vec<u8> {
    let mut t = Vec::new();
    let mut device = |name: &[u8], major: [u8; 8], minor: [u8; 8]| {
        member(&mut t, name, b'3', b"", b"", 0o600);
        let header = t.len() - 512;
        t[header + 329..header + 337].copy_from_slice(&major);
        t[header + 337..header + 345].copy_from_slice(&minor);
        set_checksum(&mut t[header..]);
    };
    device(b"major4096", *b"0010000\0", *b"0000000\0");
    device(b"minor2e40", *b"0000001\0", [0x80, 0, 1, 0, 0, 0, 0, 0]);
    device(b"null", *b"0000001\0", *b"0000003\0");
    end_of_archive(&mut t);
    t
}

// Tar writers and times, shared by the mount and restore tests (both compare with GNU tar's
// extraction of the same stream).

/// GNU tar's pax format with every xattr and sparse files detected.
pub const GNU_POSIX_SPARSE: &[&str] = &[
    "tar",
    "--format=posix",
    "--xattrs",
    "--xattrs-include=*",
    "--sparse",
    "-cf",
    "-",
];
pub const BSDTAR_PAX: &[&str] = &["bsdtar", "--format", "pax", "-cf", "-"];
