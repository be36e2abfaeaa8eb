//! One 512-byte tar header block: field access, numbers (octal and base-256) and checksums.

pub const BLOCK: usize = 512;

/// Typeflags that describe the member after them rather than a member of their own.
pub const GNU_LONGNAME: u8 = b'L';
pub const GNU_LONGLINK: u8 = b'K';
pub const PAX_LOCAL: u8 = b'x';
pub const PAX_GLOBAL: u8 = b'g';
/// Solaris' pre-POSIX extended header; laid out like `x`.
pub const SOLARIS_EXT: u8 = b'X';
pub const HARDLINK: u8 = b'1';
pub const DIRECTORY: u8 = b'5';
pub const GNU_SPARSE: u8 = b'S';

pub struct Header<'a>(pub &'a [u8; BLOCK]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// POSIX ustar (also pax): `ustar\0` + `00`; names may use the prefix field.
    Ustar,
    /// GNU / old GNU: `ustar  \0`; atime, ctime and the sparse map live where ustar has prefix.
    Gnu,
    /// Pre-POSIX v7 header: no magic.
    V7,
}

impl<'a> Header<'a> {
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    pub fn typeflag(&self) -> u8 {
        self.0[156]
    }

    /// As GNU tar tells them (`list.c`): `ustar\0` whatever the version, `ustar  \0` with its
    /// version, and anything else (a `ustar ` with another version too) a v7 header, whose
    /// prefix, device numbers and sparse map are not read.
    pub fn dialect(&self) -> Dialect {
        match &self.0[257..265] {
            b"ustar  \0" => Dialect::Gnu,
            m if &m[..6] == b"ustar\0" => Dialect::Ustar,
            _ => Dialect::V7,
        }
    }

    /// An old-GNU sparse member: typeflag `S` in a GNU header. GNU tar reads an `S` in any
    /// other header as a file of unknown type (a regular file of the header's size).
    pub fn gnu_sparse(&self) -> bool {
        self.typeflag() == GNU_SPARSE && self.dialect() == Dialect::Gnu
    }

    /// Check the header checksum. Writers sum the bytes as unsigned (POSIX) or, historically,
    /// signed chars; both are accepted, as GNU tar and libarchive do.
    pub fn checksum_ok(&self) -> Result<(), String> {
        let stored = parse_octal(&self.0[148..156])
            .ok_or_else(|| "unreadable header checksum field (not a tar header?)".to_string())?;
        // Whole-header sums (which the compiler vectorizes: every member's header is summed),
        // with the field itself counted as spaces. The signed sum only when the other fails.
        let field = &self.0[148..156];
        let spaces = 8 * b' ' as i64;
        let sum = |b: &[u8]| b.iter().map(|&b| b as u32).sum::<u32>() as i64;
        let unsigned = sum(&self.0[..]) - sum(field) + spaces;
        if stored as i64 == unsigned {
            return Ok(());
        }
        let signed_sum = |b: &[u8]| b.iter().map(|&b| b as i8 as i32).sum::<i32>() as i64;
        let signed = signed_sum(&self.0[..]) - signed_sum(field) + spaces;
        if stored as i64 == signed {
            Ok(())
        } else {
            Err(format!(
                "header checksum mismatch (stored {stored:o}, computed {unsigned:o}, both octal)"
            ))
        }
    }

    pub fn name(&self) -> Vec<u8> {
        let name = cstr(&self.0[0..100]);
        let prefix = cstr(&self.0[345..500]);
        if self.dialect() == Dialect::Ustar && !prefix.is_empty() {
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            p
        } else {
            name.to_vec()
        }
    }

    pub fn linkname(&self) -> Vec<u8> {
        cstr(&self.0[157..257]).to_vec()
    }

    pub fn uname(&self) -> Vec<u8> {
        cstr(&self.0[265..297]).to_vec()
    }

    pub fn gname(&self) -> Vec<u8> {
        cstr(&self.0[297..329]).to_vec()
    }

    pub fn mode(&self) -> Result<u64, String> {
        self.number(100..108, "mode")
    }
    pub fn uid(&self) -> Result<i64, String> {
        self.signed_number(108..116, "uid")
    }
    pub fn gid(&self) -> Result<i64, String> {
        self.signed_number(116..124, "gid")
    }
    pub fn size(&self) -> Result<u64, String> {
        self.number(124..136, "size")
    }
    pub fn mtime(&self) -> Result<i64, String> {
        self.signed_number(136..148, "mtime")
    }
    pub fn devmajor(&self) -> Result<u64, String> {
        self.number(329..337, "devmajor")
    }
    pub fn devminor(&self) -> Result<u64, String> {
        self.number(337..345, "devminor")
    }

    /// Old GNU sparse headers: the "more sparse entries follow in extension blocks" flag.
    pub fn gnu_sparse_extended(&self) -> bool {
        self.0[482] != 0
    }

    /// Old GNU sparse: the file's real (expanded) size.
    pub fn gnu_realsize(&self) -> Result<u64, String> {
        self.number(483..495, "realsize")
    }

    fn number(&self, range: std::ops::Range<usize>, what: &str) -> Result<u64, String> {
        let n = self.signed_number(range, what)?;
        u64::try_from(n).map_err(|_| format!("negative {what} field"))
    }

    fn signed_number(&self, range: std::ops::Range<usize>, what: &str) -> Result<i64, String> {
        parse_number(&self.0[range]).ok_or_else(|| format!("malformed {what} field"))
    }
}

/// A numeric header field: octal text (padded with spaces or NULs) or big-endian base-256
/// (GNU), two's complement for negative values, marked by a first byte of 0x80 (positive) or
/// 0xff (negative). GNU tar reads no other first byte with its high bit set as a number.
pub fn parse_number(field: &[u8]) -> Option<i64> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            if first != 0x80 && first != 0xff {
                return None;
            }
            // Bit 7 marks the encoding; bit 6 is the sign of a two's complement number.
            let negative = first & 0x40 != 0;
            let first = if negative { first | 0x80 } else { first & 0x7f };
            let mut v: i128 = if negative { -1 } else { 0 };
            for &b in std::iter::once(&first).chain(&field[1..]) {
                v = (v << 8) | b as i128;
                if !(i64::MIN as i128..=i64::MAX as i128).contains(&v) {
                    return None;
                }
            }
            Some(v as i64)
        }
        _ => parse_octal(field).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Octal digits, optionally surrounded by spaces, ended by a space or NUL. An all-blank field
/// is zero.
pub fn parse_octal(field: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < field.len() && (field[i] == b' ' || field[i] == 0) {
        i += 1;
    }
    let mut v: u64 = 0;
    let mut digits = 0;
    while i < field.len() && (b'0'..=b'7').contains(&field[i]) {
        v = v.checked_mul(8)?.checked_add((field[i] - b'0') as u64)?;
        i += 1;
        digits += 1;
    }
    if digits == 0 && i < field.len() {
        return None;
    }
    // Whatever ends the digits must be a terminator.
    if field[i..].iter().all(|&b| b == b' ' || b == 0) {
        Some(v)
    } else {
        None
    }
}

/// The bytes of a NUL-terminated (or full-width) field.
pub fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}
