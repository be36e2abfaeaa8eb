//! How reports look: JSON shapes (a contract: see the README) and human formatting.

use std::collections::BTreeMap;
use std::io::Write;

use cellar_store::error::{path_text, printable};
use cellar_store::oci::LeftOut;
use cellar_store::{Snapshot, Stats};
use serde::Serialize;

#[derive(Serialize)]
pub struct SnapshotJson<'a> {
    pub id: String,
    pub short_id: String,
    pub name: &'a str,
    pub parent: Option<String>,
    pub created: &'a str,
    /// Length of the tar stream in bytes.
    pub size: u64,
    pub added_bytes: u64,
    pub members: u64,
    pub sha256: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a Snapshot> for SnapshotJson<'a> {
    fn from(s: &'a Snapshot) -> Self {
        SnapshotJson {
            id: s.id.hex(),
            short_id: s.short_id(),
            name: &s.name,
            parent: s.parent.map(|p| p.hex()),
            created: &s.created,
            size: s.stream_len,
            added_bytes: s.added_bytes,
            members: s.members,
            sha256: &s.stream_sha256,
            labels: &s.labels,
        }
    }
}

#[derive(Serialize)]
pub struct StatsJson {
    pub snapshots: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub packs: u64,
    pub dedup_ratio: f64,
}

impl From<&Stats> for StatsJson {
    fn from(s: &Stats) -> Self {
        StatsJson {
            snapshots: s.snapshots,
            logical_bytes: s.logical_bytes,
            stored_bytes: s.stored_bytes,
            chunks: s.chunks,
            packs: s.packs,
            dedup_ratio: (s.dedup_ratio() * 1000.0).round() / 1000.0,
        }
    }
}

/// Paths an image leaves out (names starting `.wh.`, which a layer cannot carry), in the
/// `--json` reports of `export`, `push` and `pack`.
#[derive(Serialize)]
pub struct LeftOutJson {
    /// How many in all.
    pub count: u64,
    /// The first 1,000, from the root, escaped as `ls` shows names.
    pub paths: Vec<String>,
}

impl From<&LeftOut> for LeftOutJson {
    fn from(l: &LeftOut) -> Self {
        LeftOutJson {
            count: l.count,
            paths: l.paths.iter().map(|p| rooted(p)).collect(),
        }
    }
}

/// How many left-out paths a message names; the rest are counted.
const LEFT_OUT_SHOWN: usize = 5;

/// Paths left out, for a message: `2 paths named .wh.* (OCI reads such names as whiteouts):
/// /a/.wh.x, /b/.wh.y`, the first few named and the rest counted.
pub fn left_out_summary(l: &LeftOut) -> String {
    let shown: Vec<String> = l
        .paths
        .iter()
        .take(LEFT_OUT_SHOWN)
        .map(|p| rooted(p))
        .collect();
    let more = l.count - shown.len() as u64;
    format!(
        "{} named .wh.* (OCI reads such names as whiteouts): {}{}",
        if l.count == 1 {
            "1 path".to_string()
        } else {
            format!("{} paths", l.count)
        },
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// A path relative to the root as `ls` would show it from the root: `/etc/.wh.x`.
fn rooted(path: &[u8]) -> String {
    format!("/{}", escape_name(path))
}

/// `println!` for reports: a reader that went away (`cellar show x | head -1`) is an output
/// error, returned from the enclosing function with `?` and reported quietly by `main`, not
/// the panic `println!` makes of it.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(cellar_store::Error::Output)?;
    }};
}
pub(crate) use outln;

/// `eprintln!` for messages: a stderr that went away (`cellar verify 2>&1 | head`) loses the
/// message instead of panicking, as `eprintln!` would.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
pub(crate) use errln;

/// A warning on stderr. Its lines stay lines (a source command's stderr, carried in one, reads
/// as the command wrote it); other control characters are escaped, as everywhere in messages.
pub fn warn(text: &str) {
    let mut lines = text.split('\n');
    errln!("cellar: warning: {}", printable(lines.next().unwrap_or("")));
    for line in lines {
        errln!("{}", printable(line));
    }
}

/// Print one JSON document on stdout. A reader that went away is an output error (reported
/// quietly by `main`), not a panic as `println!` would make it.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(cellar_store::Error::Output)?;
    Ok(())
}

/// A JSON array written an element at a time, laid out as `serde_json::to_string_pretty` lays
/// out the whole array (so a listing streamed this way reads like every other command's `--json`), for
/// listings that may hold millions of entries.
#[derive(Default)]
pub struct JsonArray {
    started: bool,
}

impl JsonArray {
    pub fn push(&mut self, out: &mut impl Write, value: &impl Serialize) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        self.push_with(out, |out| write_indented(out, &text, 2))
    }

    /// An element whose text `write` writes, laid out as an element is (`write_indented`
    /// by 2), for one too large to be made in memory.
    pub fn push_with(
        &mut self,
        out: &mut impl Write,
        write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        out.write_all(if self.started { b",\n" } else { b"[\n" })
            .map_err(cellar_store::Error::Output)?;
        self.started = true;
        write(out)
    }

    pub fn end(self, out: &mut impl Write) -> anyhow::Result<()> {
        out.write_all(if self.started { b"\n]\n" } else { b"[]\n" })
            .map_err(cellar_store::Error::Output)?;
        Ok(())
    }
}

/// `text` (pretty JSON) with every line indented by `by` spaces, and no newline after it.
pub fn write_indented(out: &mut dyn Write, text: &str, by: usize) -> anyhow::Result<()> {
    for (i, line) in text.lines().enumerate() {
        let sep = if i == 0 { "" } else { "\n" };
        write!(out, "{sep}{:by$}{line}", "").map_err(cellar_store::Error::Output)?;
    }
    Ok(())
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A name as `ls -b` shows it: a message's escapes (`path_text`: C escapes for control
/// characters and backslash, octal for bytes that are not UTF-8) and a space escaped too,
/// since `ls` separates names with spaces.
pub fn escape_name(name: &[u8]) -> String {
    path_text(name).replace(' ', "\\ ")
}

/// A path for JSON: as text (lossily), plus its exact bytes (base64) when they are not UTF-8.
pub fn json_path(path: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(path) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(path).into_owned(),
            Some(base64(path)),
        ),
    }
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Unix seconds and nanoseconds as RFC 3339 (UTC); the bare seconds if out of range.
pub fn rfc3339(secs: i64, nsec: u32) -> String {
    let c = Civil::of(secs);
    let mut out = format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}",
        c.year_text(),
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second
    );
    if nsec > 0 {
        let digits = format!("{:09}", nsec.min(999_999_999));
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// `YYYY-MM-DD HH:MM` in UTC, as `ls -l` shows a time.
pub fn minutes(secs: i64) -> String {
    let c = Civil::of(secs);
    format!(
        "{}-{:02}-{:02} {:02}:{:02}",
        c.year_text(),
        c.month,
        c.day,
        c.hour,
        c.minute
    )
}

/// A UTC time in the proleptic Gregorian calendar, for any `i64` of seconds: a stream's mtime
/// may lie past the year 9999 (or before 0), where RFC 3339 ends and the `time` crate errs.
struct Civil {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Civil {
    fn of(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let in_day = secs.rem_euclid(86_400);
        // Howard Hinnant's days-to-civil, over 400-year eras.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (in_day / 3600) as u8,
            minute: (in_day / 60 % 60) as u8,
            second: (in_day % 60) as u8,
        }
    }

    /// Four digits for the years RFC 3339 writes (0 to 9999); ISO 8601's expanded form, with
    /// a sign, for any other (`+10000`, `-0001`).
    fn year_text(&self) -> String {
        match self.year {
            0..=9999 => format!("{:04}", self.year),
            y => format!("{y:+05}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calendar agrees with the `time` crate's over its range, and goes on past it.
    #[test]
    fn times_as_rfc3339_and_past_it() {
        let rfc = |secs: i64, nsec: u32| {
            (time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
                + time::Duration::nanoseconds(nsec.into()))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
        };
        let first = -62_167_219_200; // 0000-01-01T00:00:00Z
        let last = 253_402_300_799; // 9999-12-31T23:59:59Z
        let mut secs = first;
        while secs <= last {
            for nsec in [0, 1, 500_000_000, 970_944_188] {
                assert_eq!(rfc3339(secs, nsec), rfc(secs, nsec), "{secs}.{nsec}");
            }
            secs += 86_399 * 13 + 7;
        }
        for secs in [first, -1, 0, 951_782_400, last] {
            assert_eq!(rfc3339(secs, 0), rfc(secs, 0), "{secs}");
        }
        assert_eq!(rfc3339(last + 1, 0), "+10000-01-01T00:00:00Z");
        assert_eq!(rfc3339(first - 1, 5), "-0001-12-31T23:59:59.000000005Z");
        assert_eq!(minutes(last + 61), "+10000-01-01 00:01");
        assert_eq!(minutes(1_700_000_000), "2023-11-14 22:13");
        // The ends of i64 have a date too.
        assert!(rfc3339(i64::MAX, 0).starts_with("+292277026596-12-04"));
        assert!(rfc3339(i64::MIN, 0).starts_with("-292277022657-01-27"));
    }

    #[test]
    fn names_escape_like_ls_b() {
        assert_eq!(escape_name(b"a b"), "a\\ b");
        assert_eq!(escape_name(b"tab\tx"), "tab\\tx");
        assert_eq!(escape_name(b"nl\nx"), "nl\\nx");
        assert_eq!(escape_name(b"bad\xffx"), "bad\\377x");
        assert_eq!(escape_name("ü".as_bytes()), "ü");
        assert_eq!(escape_name(b"\x01"), "\\001");
    }

    #[test]
    fn left_out_paths_fold_into_a_count() {
        let one = LeftOut {
            paths: vec![b"etc/.wh.x".to_vec()],
            count: 1,
        };
        assert_eq!(
            left_out_summary(&one),
            "1 path named .wh.* (OCI reads such names as whiteouts): /etc/.wh.x"
        );
        let many = LeftOut {
            paths: (0..1000)
                .map(|i| format!("d/.wh.{i}").into_bytes())
                .collect(),
            count: 1500,
        };
        let s = left_out_summary(&many);
        assert!(
            s.starts_with("1500 paths named")
                && s.ends_with(": /d/.wh.0, /d/.wh.1, /d/.wh.2, /d/.wh.3, /d/.wh.4 and 1495 more"),
            "{s}"
        );
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"/bad\xff"), "L2JhZP8=");
    }
}
