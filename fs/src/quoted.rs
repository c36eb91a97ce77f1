//! Names from untrusted input (archive entries, the boot server's node and
//! group names) in log lines and errors: `{}` of `Quoted(s)` writes `s` in
//! double quotes with quotes, backslashes and control characters escaped, as
//! `{:?}` would, so a hostile name cannot forge log lines; without `Debug`'s
//! escaping (its Unicode tables and `String`'s Debug cost /init over a
//! kilobyte).

use core::fmt;

#[derive(Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' | '\\' => write!(f, "\\{c}")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::Quoted;
    use alloc::format;

    #[test]
    fn escapes_what_could_forge_a_log_line() {
        assert_eq!(format!("{}", Quoted("lab")), "\"lab\"");
        assert_eq!(
            format!("{}", Quoted("a\"b\\c\nd\u{1b}")),
            "\"a\\\"b\\\\c\\u{a}d\\u{1b}\""
        );
    }
}
