//! The syntax of /etc/ember/node.conf, shared by the init and the stand-in
//! (no allocation, no std).
//!
//! One `key = value` per line; blanks around key and value are trimmed;
//! blank lines and lines whose first non-blank character is `#` are
//! skipped; keys are `[a-z0-9_]+` and appear at most once; the value is the
//! rest of the line (it may hold `=` and spaces); an empty value means
//! "unset".

use crate::Error;

/// One `key = value` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// 1-based line number.
    pub line: usize,
    pub key: &'a str,
    pub value: &'a str,
}

/// Keys as the init reads them: `sysctl.*` keys carry the sysctl's dotted
/// name, which may hold `-` and uppercase (interface names).
fn valid_key(key: &str) -> bool {
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    match key.strip_prefix("sysctl.") {
        Some(name) => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        }
        None => !key.is_empty() && key.bytes().all(plain),
    }
}

/// Parses one line: `Ok(None)` for blank and comment lines.
fn parse_line(line_no: usize, raw: &str) -> Result<Option<Entry<'_>>, Error> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (key, value) = line
        .split_once('=')
        .ok_or(Error::ConfNoEquals { line: line_no })?;
    let key = key.trim();
    if !valid_key(key) {
        return Err(Error::ConfBadKey { line: line_no });
    }
    Ok(Some(Entry {
        line: line_no,
        key,
        value: value.trim(),
    }))
}

/// The entries of a node.conf in file order, each checked (a repeated key
/// is an error at its second occurrence).
pub fn entries(text: &str) -> Entries<'_> {
    Entries {
        text,
        lines: text.lines(),
        line_no: 0,
    }
}

pub struct Entries<'a> {
    text: &'a str,
    lines: core::str::Lines<'a>,
    line_no: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let raw = self.lines.next()?;
            self.line_no += 1;
            let entry = match parse_line(self.line_no, raw) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            };
            // Files are a few lines long: rescanning beats allocating a set.
            let seen = self
                .text
                .lines()
                .take(self.line_no - 1)
                .enumerate()
                .filter_map(|(i, l)| parse_line(i + 1, l).ok().flatten())
                .any(|e| e.key == entry.key);
            if seen {
                return Some(Err(Error::ConfDuplicate { line: self.line_no }));
            }
            return Some(Ok(entry));
        }
    }
}

/// Checks the whole file, then returns `key`'s value (`None` when absent or
/// empty).
pub fn lookup<'a>(text: &'a str, key: &str) -> Result<Option<&'a str>, Error> {
    let mut found = None;
    for entry in entries(text) {
        let entry = entry?;
        if entry.key == key && !entry.value.is_empty() {
            found = Some(entry.value);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str =
        "# comment\n\nruntime = /usr/local/bin/rke2 agent --x=y\nnode_name=n1\n  api_ca =  \n";

    #[test]
    fn entries_come_in_file_order_with_line_numbers() {
        let mut it = entries(CONF);
        assert_eq!(
            it.next(),
            Some(Ok(Entry {
                line: 3,
                key: "runtime",
                value: "/usr/local/bin/rke2 agent --x=y"
            }))
        );
        assert_eq!(it.next().unwrap().unwrap().key, "node_name");
        assert_eq!(it.next().unwrap().unwrap().value, "");
        assert_eq!(it.next(), None);
    }

    #[test]
    fn lookup_treats_empty_values_as_unset() {
        assert_eq!(lookup(CONF, "node_name"), Ok(Some("n1")));
        assert_eq!(lookup(CONF, "api_ca"), Ok(None));
        assert_eq!(lookup(CONF, "absent"), Ok(None));
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line() {
        assert_eq!(
            lookup("a = 1\njunk\n", "a"),
            Err(Error::ConfNoEquals { line: 2 })
        );
        assert_eq!(lookup("Bad = 1\n", "a"), Err(Error::ConfBadKey { line: 1 }));
        assert_eq!(lookup(" = 1\n", "a"), Err(Error::ConfBadKey { line: 1 }));
        assert_eq!(
            lookup("sysctl. = 1\n", "a"),
            Err(Error::ConfBadKey { line: 1 })
        );
        assert_eq!(lookup("sysctl.vm.max_map_count = 1\n", "a"), Ok(None));
        assert_eq!(
            lookup("a = 1\n# x\na = 2\n", "a"),
            Err(Error::ConfDuplicate { line: 3 })
        );
    }
}
