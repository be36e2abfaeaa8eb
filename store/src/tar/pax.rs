//! PAX extended header records: `"%d %s=%s\n"`, the length counting the whole record.

/// One `key=value` record, both kept as raw bytes (values may be binary, e.g. xattrs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaxRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Most PAX records one member may have, over all its headers. Each costs two small
/// allocations, so without a bound 64 MiB of five-byte records would take gigabytes; real
/// members have a few (and Linux allows no more than 64 KiB of xattr names on a file).
pub const MAX_RECORDS: usize = 1 << 16;

/// Split a PAX header payload into records, for a member that has `already` records from
/// earlier headers. On error returns the byte offset inside `data` and what is wrong.
pub fn parse_records(data: &[u8], already: usize) -> Result<Vec<PaxRecord>, (usize, String)> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        // Some writers pad the block with NULs after the last record.
        if data[pos..].iter().all(|&b| b == 0) {
            break;
        }
        if already + records.len() >= MAX_RECORDS {
            return Err((
                pos,
                format!("more than {MAX_RECORDS} PAX records for one member"),
            ));
        }
        let rest = &data[pos..];
        // The length's digits, then a space.
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&b' ') {
            let what = match digits {
                0 => "PAX record without a length",
                _ => "PAX record length is not followed by a space",
            };
            return Err((pos, what.to_string()));
        }
        let space = digits;
        let shown = String::from_utf8_lossy(&rest[..space]);
        let len = match shown.parse::<usize>() {
            Ok(len) if len <= rest.len() => len,
            _ => {
                return Err((
                    pos,
                    format!(
                        "PAX record length {shown} runs past the header's {} bytes",
                        rest.len()
                    ),
                ))
            }
        };
        // A record holds at least its length, a space, a key, '=' and a newline.
        if len < space + 4 {
            return Err((
                pos,
                format!("PAX record length {len} is too short for a record"),
            ));
        }
        let record = &rest[space + 1..len];
        if record.last() != Some(&b'\n') {
            return Err((pos, "PAX record does not end with a newline".to_string()));
        }
        let record = &record[..record.len() - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or((pos, "PAX record without '='".to_string()))?;
        if eq == 0 {
            return Err((pos, "PAX record with an empty key".to_string()));
        }
        records.push(PaxRecord {
            key: record[..eq].to_vec(),
            value: record[eq + 1..].to_vec(),
        });
        pos += len;
    }
    Ok(records)
}

/// The value of the last record with `key` (later records override earlier ones).
pub fn lookup<'a>(records: &'a [PaxRecord], key: &str) -> Option<&'a [u8]> {
    records
        .iter()
        .rev()
        .find(|r| r.key == key.as_bytes())
        .map(|r| r.value.as_slice())
}

/// A PAX decimal value such as `size` or `uid`.
pub fn parse_decimal(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// GNU tar refuses a member whose PAX records give a number it cannot read ("Malformed
/// extended header: invalid gid=-5x"). The records of the keys cellar reads as numbers must
/// be such that GNU tar reads them: Err names the first that is not.
pub fn check_numbers(records: &[PaxRecord]) -> Result<(), String> {
    for r in records {
        let v = r.value.as_slice();
        let ok = match r.key.as_slice() {
            // Read, as GNU tar does, whatever their range: one Linux cannot hold is ignored
            // with a warning where the tree is built.
            b"uid" | b"gid" => {
                let digits = v.strip_prefix(b"-").unwrap_or(v);
                !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
            }
            b"size"
            | b"GNU.sparse.size"
            | b"GNU.sparse.realsize"
            | b"GNU.sparse.offset"
            | b"GNU.sparse.numbytes"
            | b"GNU.sparse.numblocks"
            | b"GNU.sparse.major"
            | b"GNU.sparse.minor" => parse_decimal(v).is_some(),
            b"mtime" => parse_time(v).is_some(),
            b"GNU.sparse.map" => {
                let nums: Vec<_> = v.split(|&b| b == b',').map(parse_decimal).collect();
                nums.len() % 2 == 0 && nums.iter().all(Option::is_some)
            }
            _ => true,
        };
        if !ok {
            return Err(format!(
                "malformed PAX {} record ({:?})",
                String::from_utf8_lossy(&r.key),
                String::from_utf8_lossy(&v[..v.len().min(64)])
            ));
        }
    }
    Ok(())
}

/// A PAX 0.0 sparse map is `GNU.sparse.offset` and `GNU.sparse.numbytes` records in pairs,
/// in that order, no more of them than `GNU.sparse.numblocks` says when it is given. GNU tar
/// refuses a record out of its pair ("Malformed extended header: excess
/// GNU.sparse.offset=50"); one left without its other half would make a map with a segment
/// missing, so a file of the wrong bytes. Err names the first record out of place.
pub fn check_sparse_pairs(records: &[PaxRecord]) -> Result<(), String> {
    let numblocks = lookup(records, "GNU.sparse.numblocks").and_then(parse_decimal);
    let mut pending: Option<&PaxRecord> = None;
    let mut pairs = 0u64;
    let shown = |r: &PaxRecord| {
        format!(
            "{}={}",
            String::from_utf8_lossy(&r.key),
            String::from_utf8_lossy(&r.value[..r.value.len().min(64)])
        )
    };
    for r in records {
        match (r.key.as_slice(), pending) {
            (b"GNU.sparse.offset", None) => pending = Some(r),
            (b"GNU.sparse.numbytes", Some(_)) => {
                pending = None;
                pairs += 1;
                if numblocks.is_some_and(|n| pairs > n) {
                    return Err(format!(
                        "malformed PAX sparse map: {} is past the GNU.sparse.numblocks={} \
                         segments",
                        shown(r),
                        numblocks.unwrap_or_default()
                    ));
                }
            }
            (b"GNU.sparse.offset", Some(_)) | (b"GNU.sparse.numbytes", None) => {
                return Err(format!(
                    "malformed PAX sparse map: {} is out of its offset/numbytes pair",
                    shown(r)
                ))
            }
            _ => {}
        }
    }
    match pending {
        Some(r) => Err(format!(
            "malformed PAX sparse map: {} has no GNU.sparse.numbytes after it",
            shown(r)
        )),
        None => Ok(()),
    }
}

/// A PAX time as GNU tar reads one: `[-]SECS[.FRACTION]` at its start, where what follows is
/// ignored (Python's tarfile writes a tiny float as `1e-05`, read as 1; `12abc` is 12), and
/// None when it does not start so.
pub fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, rest) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let digits = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = digits(rest);
    if n == 0 {
        return None;
    }
    let secs = std::str::from_utf8(&rest[..n]).ok()?;
    let frac = match rest[n..].strip_prefix(b".") {
        Some(after) => std::str::from_utf8(&after[..digits(after)]).ok()?,
        None => "",
    };
    // The magnitude first: -9223372036854775808 is a time, though its digits are no i64.
    let secs: i128 = secs.parse::<u64>().ok()?.into();
    let secs = i64::try_from(if neg { -secs } else { secs }).ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if !neg {
        return Some((secs, nsec));
    }
    // Toward minus infinity, as GNU tar reads it: digits past the ninth that are not all zero
    // take the time one nanosecond further back.
    let beyond = frac.bytes().skip(9).any(|b| b != b'0');
    match nsec + u32::from(beyond) {
        0 => Some((secs, 0)),
        ns => Some((secs.checked_sub(1)?, 1_000_000_000 - ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_rejects_malformed_ones() {
        let recs = parse_records(b"16 path=a/b/c.t\n11 size=42\n", 0).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(lookup(&recs, "path"), Some(&b"a/b/c.t"[..]));
        assert_eq!(lookup(&recs, "size").and_then(parse_decimal), Some(42));
        assert!(parse_records(b"99 path=x\n", 0).is_err());
        assert!(parse_records(b"10 pathx\n\n", 0).is_err());
        assert!(parse_records(b"x path=a\n", 0).is_err());
        assert!(parse_records(b"9 path=ab", 0).is_err());
        assert!(parse_records(b"3 =\n", 0).is_err());
        assert_eq!(
            parse_records(b"11 size=42\n\0\0\0", MAX_RECORDS - 1)
                .unwrap()
                .len(),
            1
        );
        let (at, what) =
            parse_records(b"16 path=a/b/c.t\n11 size=42\n", MAX_RECORDS - 1).unwrap_err();
        assert_eq!(at, 16, "{what}");
    }

    #[test]
    fn a_bad_length_is_named_for_what_is_wrong_with_it() {
        let what = |data: &[u8]| parse_records(data, 0).unwrap_err().1;
        assert_eq!(
            what(b"0 \n"),
            "PAX record length 0 is too short for a record"
        );
        assert_eq!(
            what(b"4 k\n"),
            "PAX record length 4 is too short for a record"
        );
        assert_eq!(
            what(b"99999999999999999999999 path=x\n"),
            "PAX record length 99999999999999999999999 runs past the header's 31 bytes"
        );
        assert_eq!(
            what(b"12 path=x\n"),
            "PAX record length 12 runs past the header's 10 bytes"
        );
        assert_eq!(what(b" 5 k=\n"), "PAX record without a length");
        assert_eq!(
            what(b"5k=\n"),
            "PAX record length is not followed by a space"
        );
    }
}
