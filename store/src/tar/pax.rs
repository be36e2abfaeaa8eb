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
        let space = rest
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or((pos, "PAX record without a length".to_string()))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or((pos, "PAX record length is not a decimal number".to_string()))?;
        if len <= space + 1 || len > rest.len() {
            return Err((
                pos,
                format!(
                    "PAX record length {len} runs past the header's {} bytes",
                    rest.len()
                ),
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
}
