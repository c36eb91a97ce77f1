//! UTC calendar time from a Unix time, without a time-zone database: the
//! timestamps Kubernetes objects carry (RFC 3339, what the runtime and the
//! API double write), and the one conversion the host tools' SPDX
//! documents and the console's pages print. Proleptic Gregorian, by
//! Howard Hinnant's days-to-civil algorithm.

use core::fmt;

/// A second-precision UTC time, broken into its calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl UtcTime {
    /// The calendar time `secs` seconds after 1970-01-01T00:00:00Z
    /// (negative: before it).
    pub fn from_unix(secs: i64) -> UtcTime {
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        // Each field is in range by construction (day 1..=31, month
        // 1..=12, rem < 86,400), so the narrowing casts cannot wrap.
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }
}

/// RFC 3339 with a `Z`: `2026-12-07T12:00:00Z`.
impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn known_instants_read_as_rfc3339() {
        assert_eq!(UtcTime::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            UtcTime::from_unix(951_782_400).to_string(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            UtcTime::from_unix(1_700_000_000).to_string(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            UtcTime::from_unix(1_796_644_800).to_string(),
            "2026-12-07T12:00:00Z"
        );
        assert_eq!(UtcTime::from_unix(-1).to_string(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_one_before() {
        let mut prev = UtcTime::from_unix(-(146_097 * 86_400));
        for d in -146_096i64..146_097 {
            let t = UtcTime::from_unix(d * 86_400);
            let next_day = t.day == prev.day + 1 && t.month == prev.month;
            let next_month =
                t.day == 1 && (t.month == prev.month + 1 || (t.month == 1 && prev.month == 12));
            assert!(next_day || next_month, "{prev} -> {t}");
            prev = t;
        }
    }
}
