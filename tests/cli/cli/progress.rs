//! The progress line `snapshot` shows on a terminal.

use super::*;

/// The count of bytes read moves inside a large member, not only at its end: while the
/// stream stalls half-way through a 4 MiB file, the line says about 2 MiB read.
#[test]
fn progress_counts_bytes_read_inside_a_large_member() {
    let ts = TestStore::new();
    let mut stream = ustar_header(b"disk.img", b'0', 4 << 20, b"", 0o644).to_vec();
    stream.extend(noise(4 << 20, 9));
    stream.extend([0u8; 1024]);
    let file = ts.scratch("big.tar");
    write_file(&file, &stream);
    let half = 2 << 20;
    let feed = format!(
        "head -c {half} '{f}'; sleep 2; tail -c +{} '{f}'",
        half + 1,
        f = file.display()
    );
    let (code, said) = on_a_terminal(&ts, &format!("snapshot -- sh -c \"{feed}\""));
    assert_eq!(code, Some(0), "{said}");
    // What the lines showed as read: the stall's lines show the first half.
    let shown: Vec<f64> = said
        .split(" read, ")
        .filter_map(|before| {
            let mut words = before.rsplit(' ');
            let unit = words.next()?;
            let n: f64 = words
                .next()?
                .rsplit(|c: char| !c.is_ascii_digit() && c != '.')
                .next()?
                .parse()
                .ok()?;
            let scale = match unit {
                "B" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1048576.0,
                _ => return None,
            };
            Some(n * scale)
        })
        .collect();
    assert!(
        shown
            .iter()
            .any(|&n| (1.5 * 1048576.0..3.5 * 1048576.0).contains(&n)),
        "no progress line showed the first half read ({shown:?}):\n{said}"
    );
}
