//! Text a node sent (its report reason, its console lines), shown to an
//! operator without letting it act on the operator's screen.
//!
//! A node controls these bytes. Control characters would move the cursor,
//! retitle the terminal or forge table rows; Unicode format characters
//! (the bidi overrides U+202A–U+202E and isolates U+2066–U+2069, zero-width
//! joiners, the BOM) and the line and paragraph separators reorder or hide
//! what follows them. [`Untrusted`] writes each such character as
//! `\u{..}` and every other character as it is, so the text stays readable
//! and nothing in it is interpreted. Every operator output of a node's text
//! goes through it (the cli's tables, the server's log lines).

use core::fmt;

/// A node's text, displayed with control and format characters escaped.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = 0;
        for (at, c) in self.0.char_indices() {
            if is_inert(c) {
                continue;
            }
            f.write_str(&self.0[shown..at])?;
            write!(f, "{}", c.escape_unicode())?;
            shown = at + c.len_utf8();
        }
        f.write_str(&self.0[shown..])
    }
}

/// Whether `c` is shown as it is: not a control character (Unicode
/// category Cc), not a format character (Cf), and not a line or paragraph
/// separator (Zl, Zp).
pub fn is_inert(c: char) -> bool {
    !(c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// Unicode's general category Cf (format characters), as of Unicode 15.
/// core has no category lookup; the list is short and changes rarely.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

#[cfg(test)]
mod tests {
    use super::Untrusted;
    use alloc::format;

    #[test]
    fn plain_text_is_shown_as_it_is() {
        let text = "rke2 did not start: node-a läuft nicht (ok)";
        assert_eq!(format!("{}", Untrusted(text)), text);
    }

    #[test]
    fn terminal_escapes_and_newlines_are_escaped() {
        let shown = format!("{}", Untrusted("x\x1b]0;pwned\x07\nnode-b  default"));
        assert_eq!(shown, "x\\u{1b}]0;pwned\\u{7}\\u{a}node-b  default");
    }

    #[test]
    fn bidi_overrides_and_invisible_characters_cannot_reorder_a_row() {
        // "evil\u{202E}txt.exe" would show as "evilexe.txt" on a terminal.
        let shown = format!(
            "{}",
            Untrusted("evil\u{202E}txt.exe \u{2066}a\u{2069} \u{200B}\u{FEFF}\u{2028}")
        );
        assert_eq!(
            shown,
            "evil\\u{202e}txt.exe \\u{2066}a\\u{2069} \\u{200b}\\u{feff}\\u{2028}"
        );
        assert!(shown.chars().all(super::is_inert), "{shown}");
    }
}
