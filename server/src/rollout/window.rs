//! Maintenance windows: days and hours in a time zone, as
//! `Mon-Fri 09:00-17:00 Europe/Berlin` (days as a range or a list,
//! `Sat,Sun`; hours that wrap past midnight, `22:00-04:00`, belong to the
//! day they start on). A rollout hands new nodes the new UKI only while
//! one of its windows is open; nodes already in flight settle either way.
//!
//! The zone's offset comes from the system's TZif file
//! (`/usr/share/zoneinfo/NAME`, read here: a few dozen lines instead of a
//! time-zone crate). Debian's tzdata files are "fat": they list every
//! transition up to 2037, which covers a rollout; past the last one the
//! last offset holds.

use std::fmt;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One window.
#[derive(Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit d set: day d (0 = Monday) opens the window.
    days: u8,
    start_min: u32,
    end_min: u32,
    zone: Zone,
    text: String,
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A zone: transitions (UTC seconds) and the offset from each on.
#[derive(Clone, PartialEq, Eq)]
struct Zone {
    name: String,
    /// (from, offset seconds), ascending; the first applies before too.
    offsets: Vec<(i64, i32)>,
}

impl Zone {
    fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            offsets: vec![(i64::MIN, 0)],
        }
    }

    fn offset_at(&self, t: i64) -> i32 {
        let i = self.offsets.partition_point(|(from, _)| *from <= t);
        self.offsets[i.saturating_sub(1)].1
    }

    fn load(name: &str) -> Result<Zone, String> {
        if name == "UTC" || name == "Z" {
            return Ok(Zone::utc());
        }
        let valid = !name.is_empty()
            && !name.starts_with('/')
            && !name
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
        if !valid {
            return Err(format!(
                "time zone {name:?}: not a zone name like Europe/Berlin"
            ));
        }
        let path = std::path::Path::new(ZONEINFO).join(name);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("time zone {name:?}: {}: {e}", path.display()))?;
        let offsets = parse_tzif(&bytes).map_err(|e| format!("time zone {name:?}: {e}"))?;
        Ok(Zone {
            name: name.to_string(),
            offsets,
        })
    }
}

const ZONEINFO: &str = "/usr/share/zoneinfo";

fn be32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "TZif file cut short".to_string())
}

/// The transitions of a TZif file (RFC 8536): the 64-bit block of a
/// version 2+ file, else the 32-bit one. Bounds checked throughout.
fn parse_tzif(b: &[u8]) -> Result<Vec<(i64, i32)>, String> {
    if b.get(..4) != Some(b"TZif") {
        return Err("not a TZif file".into());
    }
    let counts = |at: usize| -> Result<[usize; 6], String> {
        let mut c = [0usize; 6];
        for (i, v) in c.iter_mut().enumerate() {
            *v = be32(b, at + 20 + 4 * i)? as usize;
        }
        Ok(c)
    };
    let [isut, isstd, leap, time, typ, chars] = counts(0)?;
    let v1_len = time * 5 + typ * 6 + chars + leap * 8 + isstd + isut;
    let (base, tsize, [isut, isstd, leap, time, typ, chars]) = if b[4] >= b'2' {
        let at = 44 + v1_len;
        if b.get(at..at + 4) != Some(b"TZif") {
            return Err("second TZif header missing".into());
        }
        (at + 44, 8, counts(at)?)
    } else {
        (44, 4, [isut, isstd, leap, time, typ, chars])
    };
    let _ = (isut, isstd, leap, chars);
    if typ == 0 {
        return Err("no local time types".into());
    }
    let need = base + time * tsize + time + typ * 6;
    if b.len() < need {
        return Err("TZif file cut short".into());
    }
    let ttinfo = |i: usize| -> Result<i32, String> {
        if i >= typ {
            return Err(format!("transition names local time type {i} of {typ}"));
        }
        Ok(be32(b, base + time * tsize + time + i * 6)? as i32)
    };
    // Before the first transition: the first type (RFC 8536 3.2).
    let mut offsets = vec![(i64::MIN, ttinfo(0)?)];
    for i in 0..time {
        let at = base + i * tsize;
        let t = if tsize == 8 {
            (u64::from(be32(b, at)?) << 32 | u64::from(be32(b, at + 4)?)) as i64
        } else {
            i64::from(be32(b, at)? as i32)
        };
        let ty = b[base + time * tsize + i] as usize;
        offsets.push((t, ttinfo(ty)?));
    }
    Ok(offsets)
}

fn day_index(s: &str) -> Result<u32, String> {
    let l = s.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == l)
        .map(|i| i as u32)
        .ok_or_else(|| format!("day {s:?}: use Mon Tue Wed Thu Fri Sat Sun"))
}

fn minutes(s: &str) -> Result<u32, String> {
    let bad = || format!("time {s:?}: use HH:MM (00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Window {
    /// `DAYS HH:MM-HH:MM [ZONE]` (zone UTC when left out).
    pub fn parse(text: &str) -> Result<Window, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (days, hours, zone) = match words[..] {
            [d, h] => (d, h, Zone::utc()),
            [d, h, z] => (d, h, Zone::load(z)?),
            _ => {
                return Err(format!(
                    "window {text:?}: give DAYS HH:MM-HH:MM [ZONE], e.g. \"Mon-Fri 09:00-17:00 Europe/Berlin\""
                ))
            }
        };
        let mut mask = 0u8;
        for part in days.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day_index(a)?, day_index(b)?);
                    let mut d = a;
                    loop {
                        mask |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => mask |= 1 << day_index(part)?,
            }
        }
        let (start, end) = hours
            .split_once('-')
            .ok_or_else(|| format!("hours {hours:?}: use HH:MM-HH:MM"))?;
        let (start_min, end_min) = (minutes(start)?, minutes(end)?);
        if start_min == end_min {
            return Err(format!("hours {hours:?}: an empty window"));
        }
        Ok(Window {
            days: mask,
            start_min,
            end_min,
            text: format!("{days} {hours} {}", zone.name),
            zone,
        })
    }

    /// Whether the window is open at `now_ms` (UTC milliseconds).
    pub fn is_open(&self, now_ms: i64) -> bool {
        let t = now_ms.div_euclid(1000);
        let local = t + i64::from(self.zone.offset_at(t));
        let day = local.div_euclid(86_400);
        // 1970-01-01 was a Thursday (index 3).
        let weekday = ((day + 3).rem_euclid(7)) as u8;
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        let opens = |d: u8| self.days & (1 << d) != 0;
        if self.start_min < self.end_min {
            opens(weekday) && (self.start_min..self.end_min).contains(&minute)
        } else {
            // Wraps past midnight: the evening of an open day, or the
            // morning after one.
            (opens(weekday) && minute >= self.start_min)
                || (opens((weekday + 6) % 7) && minute < self.end_min)
        }
    }
}

/// Several windows, one per line of the stored text: open when any is
/// (always, when there are none).
pub fn parse_all(text: &str) -> Result<Vec<Window>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(Window::parse)
        .collect()
}

pub fn any_open(windows: &[Window], now_ms: i64) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.is_open(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-07 was a Monday.
    const MON_0000_UTC: i64 = 1_796_601_600_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn utc_windows_open_on_their_days_and_hours() {
        assert_eq!(
            (MON_0000_UTC / 1000 / 86_400 + 3) % 7,
            0,
            "the constant is a Monday"
        );
        let w = Window::parse("Mon-Fri 09:00-17:00").unwrap();
        assert!(!w.is_open(MON_0000_UTC + 8 * HOUR));
        assert!(w.is_open(MON_0000_UTC + 9 * HOUR));
        assert!(w.is_open(MON_0000_UTC + 17 * HOUR - 1));
        assert!(!w.is_open(MON_0000_UTC + 17 * HOUR));
        // Saturday 10:00.
        assert!(!w.is_open(MON_0000_UTC + 5 * 24 * HOUR + 10 * HOUR));
        let night = Window::parse("Sat,Sun 22:00-04:00 UTC").unwrap();
        // Sunday 23:00 and Monday 03:00 (the morning after Sunday): open.
        assert!(night.is_open(MON_0000_UTC - HOUR));
        assert!(night.is_open(MON_0000_UTC + 3 * HOUR));
        assert!(!night.is_open(MON_0000_UTC + 4 * HOUR));
        // Friday 23:00: Friday is not a window day.
        assert!(!night.is_open(MON_0000_UTC - 2 * 24 * HOUR - HOUR));
        let wrap = Window::parse("Fri-Mon 00:00-24:00").unwrap();
        assert!(wrap.is_open(MON_0000_UTC + HOUR));
        assert!(!wrap.is_open(MON_0000_UTC + 24 * HOUR + HOUR));
    }

    #[test]
    fn zones_come_from_the_systems_tzif_files() {
        // Berlin in December is UTC+1: 09:00 there is 08:00 UTC.
        let w = Window::parse("Mon 09:00-10:00 Europe/Berlin").unwrap();
        assert!(!w.is_open(MON_0000_UTC + 7 * HOUR + 30 * 60_000));
        assert!(w.is_open(MON_0000_UTC + 8 * HOUR + 30 * 60_000));
        assert!(!w.is_open(MON_0000_UTC + 9 * HOUR + 30 * 60_000));
        // In July (summer time) it is UTC+2: Monday 2026-07-06 07:30 UTC.
        let july_mon = MON_0000_UTC - 154 * 24 * HOUR;
        assert!(w.is_open(july_mon + 7 * HOUR + 30 * 60_000));
        assert!(!w.is_open(july_mon + 8 * HOUR + 30 * 60_000));
    }

    #[test]
    fn bad_windows_say_what_to_write() {
        for bad in [
            "Mon-Fri",
            "Someday 09:00-17:00",
            "Mon 9-17",
            "Mon 09:00-09:00",
            "Mon 25:00-26:00",
            "Mon 09:00-17:00 ../../etc/passwd",
            "Mon 09:00-17:00 Nowhere/Atlantis",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_tzif(b"TZif2").is_err());
        assert!(parse_tzif(b"nope").is_err());
        let mut cut = std::fs::read("/usr/share/zoneinfo/Europe/Berlin").unwrap();
        cut.truncate(cut.len() / 2);
        assert!(parse_tzif(&cut).is_err());
        assert_eq!(parse_all("").unwrap(), vec![]);
        assert!(any_open(&[], 0));
    }
}
