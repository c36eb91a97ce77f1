//! One line of a boot's serial console, as its writer stamped it: the
//! kernel's printk stamp (`[    2.672445] ...`, seconds since kernel start)
//! or a userspace logger's (`[    2770] ember: ...`, milliseconds since
//! kernel start, right-aligned, then a tag). A view over the text: nothing
//! is copied, and a line that fits neither shape is `Other`, never an error.

/// A serial-console line, classified by its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A printk line; `us` is microseconds since the kernel started.
    Kernel { us: u64, text: &'a str },
    /// A userspace line: `[<ms>] <tag>: <message>`.
    User {
        ms: u64,
        tag: &'a str,
        message: &'a str,
    },
    /// Firmware output, unstamped program output, torn lines.
    Other(&'a str),
}

/// The longest stamp either writer produces, with its padding: a bound so
/// that a stray `[` in program output is not scanned for ever.
const MAX_STAMP_LEN: usize = 24;

impl<'a> Line<'a> {
    pub fn parse(raw: &'a str) -> Line<'a> {
        let line = raw.trim_end_matches(['\r', '\n']);
        // Firmware and terminals leave escape sequences and carriage
        // returns in front of the first kernel line.
        let Some(start) = skip_terminal_noise(line) else {
            return Line::Other(line);
        };
        let after = &line[start + 1..];
        let Some(close) = after.find(']') else {
            return Line::Other(line);
        };
        if close > MAX_STAMP_LEN {
            return Line::Other(line);
        }
        let stamp = after[..close].trim_start_matches(' ');
        let rest = after[close + 1..]
            .strip_prefix(' ')
            .unwrap_or(&after[close + 1..]);
        match stamp.split_once('.') {
            Some((secs, frac)) => match (digits(secs), digits(frac)) {
                (Some(s), Some(f)) if frac.len() <= 9 => {
                    // The fraction is in units of 10^-len seconds.
                    let us = scale_fraction_to_us(f, frac.len());
                    match s.checked_mul(1_000_000).and_then(|v| v.checked_add(us)) {
                        Some(us) => Line::Kernel { us, text: rest },
                        None => Line::Other(line),
                    }
                }
                _ => Line::Other(line),
            },
            None => {
                let Some(ms) = digits(stamp) else {
                    return Line::Other(line);
                };
                match rest.split_once(": ") {
                    Some((tag, message)) if is_tag(tag) => Line::User { ms, tag, message },
                    _ => Line::Other(line),
                }
            }
        }
    }

    /// The stamp in milliseconds since the kernel started, if any.
    pub fn ms(&self) -> Option<u64> {
        match *self {
            Line::Kernel { us, .. } => Some(us / 1000),
            Line::User { ms, .. } => Some(ms),
            Line::Other(_) => None,
        }
    }
}

/// Where the stamp's `[` is, after control characters and ANSI escape
/// sequences (`ESC [ params final`); `None` if anything else comes first.
fn skip_terminal_noise(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' => return Some(i),
            0x1b if bytes.get(i + 1) == Some(&b'[') => {
                i += 2;
                while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                    i += 1;
                }
                i += 1;
            }
            b if b.is_ascii_control() || b == b' ' => i += 1,
            _ => return None,
        }
    }
    None
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn scale_fraction_to_us(value: u64, len: usize) -> u64 {
    if len <= 6 {
        value * 10u64.pow((6 - len) as u32)
    } else {
        value / 10u64.pow((len - 6) as u32)
    }
}

fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 32
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

/// `key=value` tokens of a message, in order. `reason=` swallows the rest
/// of the line, since reasons are free text.
pub fn fields(message: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        rest = rest.trim_start_matches(' ');
        let token_end = rest.find(' ').unwrap_or(rest.len());
        let token = &rest[..token_end];
        if let Some((key, value)) = token.split_once('=') {
            if key == "reason" {
                out.push((key, rest["reason=".len()..].trim_end()));
                break;
            }
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                out.push((key, value));
            }
        }
        rest = &rest[token_end..];
    }
    out
}

/// `603ms` or `603` as milliseconds.
pub fn millis(value: &str) -> Option<u64> {
    digits(value.strip_suffix("ms").unwrap_or(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_stamp_is_microseconds_since_start() {
        assert_eq!(
            Line::parse("[    2.672445] Run /init as init process"),
            Line::Kernel {
                us: 2_672_445,
                text: "Run /init as init process"
            }
        );
        assert_eq!(
            Line::parse("[    0.000000] Linux version 6.1").ms(),
            Some(0)
        );
    }

    #[test]
    fn init_stamp_is_milliseconds_with_a_tag() {
        assert_eq!(
            Line::parse("[    2770] ember: Ember init 0.1.0 starting as pid 1\r"),
            Line::User {
                ms: 2770,
                tag: "ember",
                message: "Ember init 0.1.0 starting as pid 1"
            }
        );
        assert_eq!(
            Line::parse("[12345678] baseline: phase=dhcp status=start").ms(),
            Some(12_345_678)
        );
    }

    #[test]
    fn escape_sequences_before_the_first_stamp_are_skipped() {
        let line = "\x1b[2J\x1b[0;0H[    0.000000] Linux version";
        assert!(matches!(Line::parse(line), Line::Kernel { us: 0, .. }));
    }

    #[test]
    fn unstamped_and_torn_lines_are_other() {
        for raw in [
            "",
            "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
            "iPXE [ok]",
            "[   12] no tag here",
            "[ 1.2.3] x",
            "[abc] ember: x",
            "[    1.] x",
            "[99999999999999999999] ember: overflow",
            "booting [    1.000000] in the middle",
        ] {
            assert!(matches!(Line::parse(raw), Line::Other(_)), "{raw:?}");
        }
    }

    #[test]
    fn fields_keep_reason_as_free_text() {
        assert_eq!(
            fields("error: phase=attest status=failed took=3ms reason=no route to host: 10.0.2.2"),
            vec![
                ("phase", "attest"),
                ("status", "failed"),
                ("took", "3ms"),
                ("reason", "no route to host: 10.0.2.2")
            ]
        );
        assert_eq!(millis("603ms"), Some(603));
        assert_eq!(millis("x"), None);
    }
}
