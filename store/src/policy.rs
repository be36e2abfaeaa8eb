//! Choosing which snapshots to forget by a retention policy: restic's rules, per lineage, in
//! UTC (`cellar prune`). `forget.rs` forgets what is chosen.

use std::collections::{BTreeMap, HashSet};

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;

/// How many snapshots to keep, per lineage, by restic's rules: the newest `last`, the newest
/// snapshot in each of the newest N hours, days, weeks (ISO), months and years that have one,
/// and every snapshot taken `within` a span before the lineage's newest. 0 (or a zero span) is
/// no rule, as for restic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Within,
    /// restic's `--keep-within-hourly` … `--keep-within-yearly`: the newest snapshot of every
    /// hour (day, week, month, year) that has one within the span, however many.
    pub within_hourly: Within,
    pub within_daily: Within,
    pub within_weekly: Within,
    pub within_monthly: Within,
    pub within_yearly: Within,
    /// restic's `--keep-tag`: every snapshot carrying one of these labels, whatever its age.
    pub labels: Vec<LabelMatch>,
}

/// A label a kept snapshot carries: `KEY` (any value) or `KEY=VALUE` (that value exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatch {
    pub key: String,
    pub value: Option<String>,
}

impl std::str::FromStr for LabelMatch {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<LabelMatch, String> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (s, None),
        };
        if key.is_empty() {
            return Err(format!("expected KEY or KEY=VALUE, got {s:?}"));
        }
        Ok(LabelMatch {
            key: key.to_string(),
            value,
        })
    }
}

impl std::fmt::Display for LabelMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

impl LabelMatch {
    fn matches(&self, s: &Snapshot) -> bool {
        s.labels
            .get(&self.key)
            .is_some_and(|v| self.value.as_ref().is_none_or(|want| want == v))
    }
}

/// restic's `--keep-within` span: years, months, days and hours (`1y6m`, `7d`, `2d12h`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Within {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl std::str::FromStr for Within {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Within, String> {
        let bad = |why: &str| {
            format!("{s:?} is not a span of the form 1y6m7d12h (years, months, days, hours): {why}")
        };
        let mut w = Within::default();
        let mut seen = String::new();
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let slot = match c {
                'y' => &mut w.years,
                'm' => &mut w.months,
                'd' => &mut w.days,
                'h' => &mut w.hours,
                _ => return Err(bad(&format!("unknown unit {c:?}"))),
            };
            if digits.is_empty() {
                return Err(bad(&format!("no number before {c:?}")));
            }
            if seen.contains(c) {
                return Err(bad(&format!("{c:?} given twice")));
            }
            seen.push(c);
            *slot = std::mem::take(&mut digits)
                .parse()
                .map_err(|_| bad("a number too large"))?;
        }
        if !digits.is_empty() {
            return Err(bad("a number without its unit"));
        }
        if seen.is_empty() {
            return Err(bad("empty"));
        }
        Ok(w)
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ];
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            write!(f, "{n}{unit}")?;
        }
        Ok(())
    }
}

impl Within {
    pub fn is_zero(&self) -> bool {
        *self == Within::default()
    }

    /// The time this span before `t`, as restic reckons it (Go's `AddDate` then hours): the
    /// months and years move the calendar with the day of the month kept, a day past the
    /// month's end running on into the next (31 March less one month is 3 March, as 31
    /// February); then the days and hours go back as lengths of time. None before the year
    /// -9999: nothing is that old.
    fn before(&self, t: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
        let months = i64::from(t.year()) * 12 + i64::from(t.month() as u8 - 1)
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(months.div_euclid(12)).ok()?;
        let month = time::Month::try_from(months.rem_euclid(12) as u8 + 1).ok()?;
        let first = time::Date::from_calendar_date(year, month, 1).ok()?;
        let date = first.checked_add(time::Duration::days(i64::from(t.day()) - 1))?;
        date.with_time(t.time())
            .assume_utc()
            .checked_sub(time::Duration::days(self.days.into()))?
            .checked_sub(time::Duration::hours(self.hours.into()))
    }
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// A snapshot with the rules that keep it (none: it goes).
#[derive(Debug, Clone)]
pub struct Decision {
    pub snapshot: Snapshot,
    pub reasons: Vec<String>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Names the time bucket (hour, day, week, month) a snapshot falls in.
type Bucket = fn(&time::OffsetDateTime) -> String;

/// Decide for every snapshot of each lineage in `snaps` (commit order). Buckets are in UTC.
pub fn apply(policy: &Policy, snaps: Vec<Snapshot>) -> Result<Vec<Decision>> {
    apply_at(policy, snaps, time::OffsetDateTime::now_utc())
}

/// `apply` as at `now`, which bounds where `--keep-within`'s span is reckoned from.
fn apply_at(
    policy: &Policy,
    snaps: Vec<Snapshot>,
    now: time::OffsetDateTime,
) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::InvalidArgument(
            "no retention policy: give at least one --keep-* option".into(),
        ));
    }
    let mut by_name: BTreeMap<String, Vec<Snapshot>> = BTreeMap::new();
    for s in snaps {
        by_name.entry(s.name.clone()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (_, mut lineage) in by_name {
        lineage.reverse(); // newest first
        let times = lineage
            .iter()
            .map(|s| {
                time::OffsetDateTime::parse(
                    &s.created,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|_| {
                    Error::corrupt(format!("snapshot {}: bad time {}", s.short_id(), s.created))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); lineage.len()];
        // Newest first by the time each was taken, as restic orders them (a clock set back
        // between two snapshots does not make the later one older); commit order breaks ties.
        let mut order: Vec<usize> = (0..lineage.len()).collect();
        order.sort_by(|&a, &b| times[b].cmp(&times[a]));
        for &i in order.iter().take(policy.last as usize) {
            reasons[i].push("last".into());
        }
        let rules: [(&str, u32, Within, Bucket); 5] = [
            ("hourly", policy.hourly, policy.within_hourly, |t| {
                format!(
                    "{}-{:02}-{:02} {:02}h",
                    t.year(),
                    t.month() as u8,
                    t.day(),
                    t.hour()
                )
            }),
            ("daily", policy.daily, policy.within_daily, |t| {
                format!("{}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
            }),
            ("weekly", policy.weekly, policy.within_weekly, |t| {
                let (y, w, _) = t.to_iso_week_date();
                format!("{y}-W{w:02}")
            }),
            ("monthly", policy.monthly, policy.within_monthly, |t| {
                format!("{}-{:02}", t.year(), t.month() as u8)
            }),
            ("yearly", policy.yearly, policy.within_yearly, |t| {
                t.year().to_string()
            }),
        ];
        for (rule, n, _, bucket) in rules {
            let mut seen = HashSet::new();
            for (k, &i) in order.iter().enumerate() {
                if seen.len() >= n as usize {
                    break;
                }
                let b = bucket(&times[i]);
                if seen.insert(b.clone()) {
                    reasons[i].push(format!("{rule} {b}"));
                } else if k + 1 == order.len() {
                    // A rule whose N is not used up keeps the oldest snapshot too, whatever
                    // its bucket: the longest history the count allows (restic since 0.16).
                    reasons[i].push(format!("oldest {rule} {b}"));
                }
            }
        }
        // Spans are reckoned from the newest snapshot not taken in the future, as restic
        // reckons them: one taken under a clock set years ahead does not push the rest out.
        // With none, restic starts from the zero time, which keeps them all.
        let newest = order.iter().map(|&i| times[i]).find(|&t| t < now);
        // Strictly after the span's start, as restic keeps them.
        let within = |span: &Within, t: time::OffsetDateTime| {
            newest
                .and_then(|newest| span.before(newest))
                .is_none_or(|start| t > start)
        };
        if !policy.within.is_zero() {
            for &i in &order {
                if within(&policy.within, times[i]) {
                    reasons[i].push(format!("within {}", policy.within));
                }
            }
        }
        for (rule, _, span, bucket) in rules {
            if span.is_zero() {
                continue;
            }
            let mut seen = HashSet::new();
            for &i in order.iter().filter(|&&i| within(&span, times[i])) {
                let b = bucket(&times[i]);
                if seen.insert(b.clone()) {
                    reasons[i].push(format!("{rule} within {span} {b}"));
                }
            }
        }
        for (i, s) in lineage.iter().enumerate() {
            for m in policy.labels.iter().filter(|m| m.matches(s)) {
                reasons[i].push(format!("label {m}"));
            }
        }
        for (snapshot, reasons) in lineage.into_iter().zip(reasons).rev() {
            out.push(Decision { snapshot, reasons });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, created: &str, n: u8) -> Snapshot {
        Snapshot::bare(n, name, created)
    }

    fn kept(policy: Policy, snaps: Vec<Snapshot>) -> Vec<u8> {
        apply(&policy, snaps)
            .unwrap()
            .into_iter()
            .filter(|d| d.keep())
            .map(|d| d.snapshot.id.0[0])
            .collect()
    }

    #[test]
    fn restic_rules() {
        let snaps = vec![
            snap("vm", "2026-11-01T10:00:00Z", 1),
            snap("vm", "2026-11-01T11:00:00Z", 2),
            snap("vm", "2026-11-02T09:00:00Z", 3),
            snap("vm", "2026-11-02T09:30:00Z", 4),
            snap("vm", "2026-11-20T08:00:00Z", 5),
            snap("db", "2026-11-01T00:00:00Z", 6),
        ];
        let p = |last, hourly, daily, weekly, monthly| Policy {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            ..Policy::default()
        };
        assert_eq!(kept(p(1, 0, 0, 0, 0), snaps.clone()), vec![6, 5]);
        assert_eq!(kept(p(0, 0, 2, 0, 0), snaps.clone()), vec![6, 4, 5]);
        assert_eq!(kept(p(0, 0, 3, 0, 0), snaps.clone()), vec![6, 2, 4, 5]);
        assert_eq!(kept(p(0, 0, 0, 0, 1), snaps.clone()), vec![6, 5]);
        assert_eq!(kept(p(0, 0, 0, 2, 0), snaps.clone()), vec![6, 4, 5]);
        assert_eq!(kept(p(0, 2, 0, 0, 0), snaps.clone()), vec![6, 4, 5]);
        // A count not used up keeps the oldest snapshot too, in a bucket already kept.
        assert_eq!(kept(p(0, 0, 7, 0, 0), snaps.clone()), vec![6, 1, 2, 4, 5]);
        assert_eq!(kept(p(0, 0, 0, 0, 2), snaps.clone()), vec![6, 1, 5]);
        assert_eq!(
            kept(p(1, 0, 0, 0, 0), snaps.clone()),
            vec![6, 5],
            "not for --keep-last"
        );
        let why = apply(&p(0, 0, 7, 0, 0), snaps.clone()).unwrap();
        let oldest = why.iter().find(|d| d.snapshot.id.0[0] == 1).unwrap();
        assert_eq!(oldest.reasons, vec!["oldest daily 2026-11-01"]);
        assert!(apply(&Policy::default(), snaps).is_err());
    }

    #[test]
    fn yearly_and_within() {
        let snaps = vec![
            snap("vm", "2024-03-31T12:00:00Z", 1),
            snap("vm", "2025-01-01T00:00:00Z", 2),
            snap("vm", "2025-06-30T12:00:00Z", 3),
            snap("vm", "2026-03-02T12:00:00Z", 4),
            snap("vm", "2026-03-30T12:00:00Z", 5),
            snap("vm", "2026-03-31T12:00:00Z", 6),
        ];
        let yearly = |n| Policy {
            yearly: n,
            ..Policy::default()
        };
        assert_eq!(kept(yearly(2), snaps.clone()), vec![3, 6]);
        assert_eq!(kept(yearly(5), snaps.clone()), vec![1, 3, 6]);
        let within = |w: &str| Policy {
            within: w.parse().unwrap(),
            ..Policy::default()
        };
        // A month before 31 March is "31 February": 3 March, as Go's AddDate has it.
        // (Clamped to 28 February, it would keep the snapshot of 2 March.)
        assert_eq!(kept(within("1m"), snaps.clone()), vec![5, 6]);
        assert_eq!(kept(within("1m1d"), snaps.clone()), vec![5, 6]);
        assert_eq!(kept(within("1m1d1h"), snaps.clone()), vec![4, 5, 6]);
        // Strictly after: two years before 31 March 2026 12:00 is the first snapshot's time.
        assert_eq!(kept(within("2y"), snaps.clone()), vec![2, 3, 4, 5, 6]);
        assert_eq!(kept(within("2y1h"), snaps.clone()), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(kept(within("24h"), snaps.clone()), vec![6]);
        assert_eq!(kept(within("25h"), snaps.clone()), vec![5, 6]);
        let why = apply(&within("1y6m"), snaps.clone()).unwrap();
        assert_eq!(why[5].reasons, vec!["within 1y6m"]);
        // Within the span of the lineage's newest snapshot, not of now.
        let far = vec![snap("db", "2001-01-01T00:00:00Z", 7)];
        assert_eq!(kept(within("1d"), far), vec![7]);
    }

    /// `--keep-within-daily 2d`: the newest of each day, for every day that has one within
    /// two days of the newest snapshot, and nothing older (no "oldest" rule, as in restic).
    #[test]
    fn within_buckets_keep_one_a_bucket_inside_the_span() {
        let snaps = vec![
            snap("vm", "2026-11-28T10:00:00Z", 1),
            snap("vm", "2026-11-29T09:00:00Z", 2),
            snap("vm", "2026-11-29T21:00:00Z", 3),
            snap("vm", "2026-11-30T08:00:00Z", 4),
            snap("vm", "2026-11-30T09:00:00Z", 5),
            snap("vm", "2026-12-01T07:00:00Z", 6),
            snap("vm", "2026-12-01T07:30:00Z", 7),
        ];
        let daily = |w: &str| Policy {
            within_daily: w.parse().unwrap(),
            ..Policy::default()
        };
        // From 29 November 07:30 on (strictly after): the 29th's 2, too late for no.1.
        assert_eq!(kept(daily("2d"), snaps.clone()), vec![3, 5, 7]);
        assert_eq!(kept(daily("2d1h"), snaps.clone()), vec![3, 5, 7]);
        assert_eq!(kept(daily("3d"), snaps.clone()), vec![1, 3, 5, 7]);
        let hourly = Policy {
            within_hourly: "1h".parse().unwrap(),
            ..Policy::default()
        };
        assert_eq!(kept(hourly, snaps.clone()), vec![7]);
        let why = apply(&daily("2d"), snaps.clone()).unwrap();
        assert_eq!(why[6].reasons, vec!["daily within 2d 2026-12-01"]);
        // Alongside a count, each rule gives its own reason.
        let both = Policy {
            daily: 1,
            ..daily("1d")
        };
        let why = apply(&both, snaps).unwrap();
        assert_eq!(
            why[6].reasons,
            vec!["daily 2026-12-01", "daily within 1d 2026-12-01"]
        );
        assert_eq!(why[4].reasons, vec!["daily within 1d 2026-11-30"]);
    }

    /// A snapshot taken in the future (a clock set wrong) is not where `--keep-within`'s span
    /// is reckoned from, as in restic: the newest one before now is. With none before now,
    /// the span starts at the zero time and keeps them all.
    #[test]
    fn within_is_reckoned_from_the_newest_snapshot_not_in_the_future() {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        let now = time::OffsetDateTime::parse("2026-12-03T12:00:00Z", rfc3339).unwrap();
        let within = |w: &str| Policy {
            within: w.parse().unwrap(),
            ..Policy::default()
        };
        let kept_at = |policy: Policy, snaps: Vec<Snapshot>| -> Vec<u8> {
            let decisions = apply_at(&policy, snaps, now).unwrap();
            let kept = decisions.into_iter().filter(|d| d.keep());
            kept.map(|d| d.snapshot.id.0[0]).collect()
        };
        let snaps = vec![
            snap("vm", "2026-09-02T10:00:00Z", 1),
            snap("vm", "2026-11-02T10:00:00Z", 2),
            snap("vm", "2026-12-01T10:00:00Z", 3),
            snap("vm", "2030-01-01T00:00:00Z", 4),
        ];
        assert_eq!(kept_at(within("3m"), snaps.clone()), vec![1, 2, 3, 4]);
        assert_eq!(kept_at(within("1m"), snaps.clone()), vec![2, 3, 4]);
        let future = vec![
            snap("vm", "2027-02-28T00:00:00Z", 5),
            snap("vm", "2028-02-29T00:00:00Z", 6),
        ];
        assert_eq!(kept_at(within("1d"), future), vec![5, 6]);
    }

    #[test]
    fn spans_parse_as_restic_writes_them() {
        let w: Within = "1y6m7d12h".parse().unwrap();
        assert_eq!((w.years, w.months, w.days, w.hours), (1, 6, 7, 12));
        assert_eq!(w.to_string(), "1y6m7d12h");
        assert_eq!("12h3d".parse::<Within>().unwrap().to_string(), "3d12h");
        for bad in ["", "7", "d", "7w", "1d2d", "-1d", "99999999999d", "1.5d"] {
            assert!(bad.parse::<Within>().is_err(), "{bad:?}");
        }
    }

    /// A clock set back between snapshots: the rules go by the time each was taken, as
    /// restic's do, not by the order they were committed in; equal times by commit order.
    #[test]
    fn rules_go_by_time_taken_not_commit_order() {
        let snaps = vec![
            snap("vm", "2026-03-03T10:00:00Z", 1),
            snap("vm", "2026-03-02T10:00:00Z", 2), // committed later, with an earlier clock
            snap("vm", "2026-03-01T10:00:00Z", 3),
            snap("vm", "2026-03-01T10:00:00Z", 4),
        ];
        let p = |last, daily| Policy {
            last,
            daily,
            ..Policy::default()
        };
        assert_eq!(kept(p(1, 0), snaps.clone()), vec![1]);
        assert_eq!(kept(p(2, 0), snaps.clone()), vec![1, 2]);
        assert_eq!(kept(p(0, 3), snaps.clone()), vec![1, 2, 4]);
        // Decisions come in commit order, whatever the times.
        let order: Vec<u8> = apply(&p(1, 0), snaps)
            .unwrap()
            .iter()
            .map(|d| d.snapshot.id.0[0])
            .collect();
        assert_eq!(order, vec![1, 2, 3, 4]);
    }

    /// restic's `--keep-tag`, as labels: `KEY` keeps any value, `KEY=VALUE` only that one,
    /// whatever else the rules drop; in every lineage.
    #[test]
    fn labels_keep_what_carries_them() {
        let labelled = |n, created, labels: &[(&str, &str)]| {
            let mut s = snap(if n < 4 { "vm" } else { "db" }, created, n);
            s.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            s
        };
        let snaps = vec![
            labelled(1, "2026-03-01T10:00:00Z", &[("keep", "yes")]),
            labelled(
                2,
                "2026-03-02T10:00:00Z",
                &[("keep", "no"), ("owner", "ci")],
            ),
            labelled(3, "2026-03-03T10:00:00Z", &[]),
            labelled(4, "2026-03-01T10:00:00Z", &[("keep", "")]),
            labelled(5, "2026-03-02T10:00:00Z", &[]),
        ];
        let p = |labels: &[&str]| Policy {
            labels: labels.iter().map(|l| l.parse().unwrap()).collect(),
            ..Policy::default()
        };
        assert_eq!(kept(p(&["keep"]), snaps.clone()), vec![4, 1, 2]);
        assert_eq!(kept(p(&["keep=yes"]), snaps.clone()), vec![1]);
        assert_eq!(kept(p(&["keep="]), snaps.clone()), vec![4]);
        assert_eq!(kept(p(&["keep=yes", "owner"]), snaps.clone()), vec![1, 2]);
        assert_eq!(kept(p(&["owner=cd"]), snaps.clone()), Vec::<u8>::new());
        let with_last = Policy {
            last: 1,
            ..p(&["keep=yes"])
        };
        assert_eq!(kept(with_last.clone(), snaps.clone()), vec![5, 1, 3]);
        let why = apply(&with_last, snaps).unwrap();
        assert_eq!(why[2].reasons, vec!["label keep=yes"]);
        assert!("=v".parse::<LabelMatch>().is_err());
        assert_eq!("k=a=b".parse::<LabelMatch>().unwrap().to_string(), "k=a=b");
    }
}
