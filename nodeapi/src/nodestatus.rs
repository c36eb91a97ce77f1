//! The readiness of a Node from the API's JSON (`GET /api/v1/nodes/NAME`),
//! without allocation: a strict JSON scanner that validates the whole
//! document and keeps only `kind`, `metadata.name` and the Ready condition
//! of `status.conditions`.

use crate::Error;

/// Nesting deeper than this is refused (a Node is about 6 levels deep).
pub const MAX_DEPTH: usize = 32;

/// The Ready condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    True,
    False,
    /// "Unknown" (the node controller's verdict on a silent node) or any
    /// other value.
    Unknown,
    /// The Node has no Ready condition (yet).
    Missing,
}

/// What the probe needs from a Node object. String fields are the raw JSON
/// string contents (escapes left as written), for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus<'a> {
    pub name: Option<&'a str>,
    pub ready: Ready,
    pub reason: Option<&'a str>,
    pub message: Option<&'a str>,
}

/// Parses a Node object. Anything that is not a complete, valid JSON object
/// with `"kind": "Node"` is an error.
pub fn node_status(json: &[u8]) -> Result<NodeStatus<'_>, Error> {
    let mut s = Scanner {
        b: json,
        pos: 0,
        depth: 0,
    };
    let mut out = NodeStatus {
        name: None,
        ready: Ready::Missing,
        reason: None,
        message: None,
    };
    let mut is_node = false;
    s.ws();
    if s.peek() != Some(b'{') {
        return Err(Error::NotANode);
    }
    s.object(&mut |s, key| {
        if eq(key, "kind") && s.peek() == Some(b'"') {
            is_node = eq(s.string()?, "Node");
            Ok(())
        } else if eq(key, "metadata") && s.peek() == Some(b'{') {
            s.object(&mut |s, key| {
                if eq(key, "name") && s.peek() == Some(b'"') {
                    out.name = Some(s.string()?);
                    Ok(())
                } else {
                    s.skip_value()
                }
            })
        } else if eq(key, "status") && s.peek() == Some(b'{') {
            s.object(&mut |s, key| {
                if eq(key, "conditions") && s.peek() == Some(b'[') {
                    s.array(&mut |s| condition(s, &mut out))
                } else {
                    s.skip_value()
                }
            })
        } else {
            s.skip_value()
        }
    })?;
    s.ws();
    if s.pos != s.b.len() {
        return Err(Error::JsonTrailing { at: s.pos });
    }
    if !is_node {
        return Err(Error::NotANode);
    }
    Ok(out)
}

/// One element of `status.conditions`; only the first Ready one counts.
fn condition<'a>(s: &mut Scanner<'a>, out: &mut NodeStatus<'a>) -> Result<(), Error> {
    if s.peek() != Some(b'{') {
        return s.skip_value();
    }
    let (mut is_ready, mut status, mut reason, mut message) = (false, None, None, None);
    s.object(&mut |s, key| {
        let slot = if eq(key, "type") {
            None
        } else if eq(key, "status") {
            Some(&mut status)
        } else if eq(key, "reason") {
            Some(&mut reason)
        } else if eq(key, "message") {
            Some(&mut message)
        } else {
            return s.skip_value();
        };
        if s.peek() != Some(b'"') {
            return s.skip_value();
        }
        let value = s.string()?;
        match slot {
            None => is_ready = eq(value, "Ready"),
            Some(slot) => *slot = Some(value),
        }
        Ok(())
    })?;
    if is_ready && out.ready == Ready::Missing {
        out.ready = match status {
            Some(v) if eq(v, "True") => Ready::True,
            Some(v) if eq(v, "False") => Ready::False,
            _ => Ready::Unknown,
        };
        out.reason = reason;
        out.message = message;
    }
    Ok(())
}

/// Whether the raw JSON string contents `raw` decode to `want`.
fn eq(raw: &str, want: &str) -> bool {
    let mut decoded = Unescape(raw.as_bytes());
    let mut want = want.chars();
    loop {
        match (decoded.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Decodes already validated string contents (surrogate pairs are decoded
/// as pairs; lone surrogates come out as U+FFFD).
struct Unescape<'a>(&'a [u8]);

impl Iterator for Unescape<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let (&first, rest) = self.0.split_first()?;
        if first != b'\\' {
            // Validated UTF-8: decode one scalar from the front.
            let len = match first {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            let (c, rest) = self.0.split_at(len.min(self.0.len()));
            self.0 = rest;
            return core::str::from_utf8(c).ok()?.chars().next();
        }
        let (&esc, rest) = rest.split_first()?;
        self.0 = rest;
        Some(match esc {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(self.0)?;
                self.0 = &self.0[4..];
                if (0xd800..0xdc00).contains(&hi) && self.0.starts_with(b"\\u") {
                    if let Some(lo) = hex4(&self.0[2..]).filter(|lo| (0xdc00..0xe000).contains(lo))
                    {
                        self.0 = &self.0[6..];
                        let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                        return Some(char::from_u32(c).unwrap_or('\u{fffd}'));
                    }
                }
                char::from_u32(hi).unwrap_or('\u{fffd}')
            }
            other => other as char,
        })
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    let digits = b.get(..4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + (d as char).to_digit(16)?;
    }
    Some(v)
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    depth: usize,
}

type KeyFn<'f, 'a> = dyn FnMut(&mut Scanner<'a>, &'a str) -> Result<(), Error> + 'f;
type ItemFn<'f, 'a> = dyn FnMut(&mut Scanner<'a>) -> Result<(), Error> + 'f;

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> Error {
        match self.peek() {
            None => Error::JsonEnd,
            Some(_) => Error::JsonUnexpected { at: self.pos },
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), Error> {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::JsonTooDeep { at: self.pos });
        }
        Ok(())
    }

    /// `{ "key": value, ... }`; `on_key` is called positioned at each value
    /// (after blanks) and must consume it.
    fn object(&mut self, on_key: &mut KeyFn<'_, 'a>) -> Result<(), Error> {
        self.enter()?;
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected());
            }
            let key = self.string()?;
            self.expect(b':')?;
            self.ws();
            on_key(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn array(&mut self, on_item: &mut ItemFn<'_, 'a>) -> Result<(), Error> {
        self.enter()?;
        self.expect(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            on_item(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    /// A string at the cursor; returns its raw contents, checked (escapes,
    /// no control characters, UTF-8).
    fn string(&mut self) -> Result<&'a str, Error> {
        self.expect(b'"')?;
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Err(Error::JsonEnd),
                Some(b'"') => break,
                Some(b'\\') => {
                    let at = self.pos;
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            hex4(self.b.get(self.pos + 1..).unwrap_or(&[]))
                                .ok_or(Error::JsonEscape { at })?;
                            self.pos += 5;
                        }
                        _ => return Err(Error::JsonEscape { at }),
                    }
                }
                Some(c) if c < 0x20 => return Err(Error::JsonControl { at: self.pos }),
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.b[start..self.pos];
        self.pos += 1;
        core::str::from_utf8(raw).map_err(|e| Error::JsonUtf8 {
            at: start + e.valid_up_to(),
        })
    }

    fn number(&mut self) -> Result<(), Error> {
        let at = self.pos;
        let bad = Error::JsonNumber { at };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.pos += 1;
                }
            }
            _ => return Err(bad),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(bad);
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(bad);
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Error> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else if word.starts_with(&self.b[self.pos..]) {
            Err(Error::JsonEnd)
        } else {
            Err(Error::JsonUnexpected { at: self.pos })
        }
    }

    /// Any value, validated and discarded.
    fn skip_value(&mut self) -> Result<(), Error> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(&mut |s, _| s.skip_value()),
            Some(b'[') => self.array(&mut |s| s.skip_value()),
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `kubectl get node -o json` prints (trimmed), ready.
    const READY: &[u8] = br#"{
  "apiVersion": "v1",
  "kind": "Node",
  "metadata": {
    "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
    "creationTimestamp": "2026-11-25T18:00:00Z",
    "labels": {"kubernetes.io/hostname": "ember-node-1", "kubernetes.io/os": "linux"},
    "name": "ember-node-1",
    "resourceVersion": "1042",
    "uid": "7a3f0c1e-0000-4000-8000-000000000001"
  },
  "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "taints": []},
  "status": {
    "addresses": [{"address": "10.0.2.15", "type": "InternalIP"}],
    "allocatable": {"cpu": "2", "memory": "1004512Ki", "pods": "110"},
    "conditions": [
      {"lastHeartbeatTime": "2026-11-25T18:00:10Z", "lastTransitionTime": "2026-11-25T18:00:00Z",
       "message": "kubelet has sufficient memory available", "reason": "KubeletHasSufficientMemory",
       "status": "False", "type": "MemoryPressure"},
      {"lastHeartbeatTime": "2026-11-25T18:00:10Z", "lastTransitionTime": "2026-11-25T18:00:05Z",
       "message": "kubelet is posting ready status", "reason": "KubeletReady",
       "status": "True", "type": "Ready"}
    ],
    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    "images": [],
    "nodeInfo": {"architecture": "amd64", "kubeletVersion": "v1.31.1+rke2r1"},
    "volumesInUse": null,
    "capacity": {"ephemeral-storage": 1.5e3, "n": -0.25}
  }
}"#;

    #[test]
    fn ready_node_from_the_api_is_ready() {
        let s = node_status(READY).unwrap();
        assert_eq!(s.name, Some("ember-node-1"));
        assert_eq!(s.ready, Ready::True);
        assert_eq!(s.reason, Some("KubeletReady"));
        assert_eq!(s.message, Some("kubelet is posting ready status"));
    }

    #[test]
    fn not_ready_unknown_and_missing_conditions_are_told_apart() {
        let not_ready = br#"{"kind":"Node","status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady","message":"PLEG is not healthy"}]}}"#;
        let s = node_status(not_ready).unwrap();
        assert_eq!((s.ready, s.reason), (Ready::False, Some("KubeletNotReady")));
        let unknown =
            br#"{"kind":"Node","status":{"conditions":[{"status":"Unknown","type":"Ready"}]}}"#;
        assert_eq!(node_status(unknown).unwrap().ready, Ready::Unknown);
        let missing = br#"{"kind":"Node","metadata":{"name":"n"},"status":{}}"#;
        assert_eq!(node_status(missing).unwrap().ready, Ready::Missing);
        let null_conditions = br#"{"kind":"Node","status":{"conditions":null}}"#;
        assert_eq!(node_status(null_conditions).unwrap().ready, Ready::Missing);
    }

    #[test]
    fn escaped_names_compare_decoded() {
        let j = br#"{"kind":"N\u006fde","status":{"conditions":[{"type":"\u0052eady","status":"Tru\u0065"}]}}"#;
        assert_eq!(node_status(j).unwrap().ready, Ready::True);
    }

    #[test]
    fn a_status_object_is_not_a_node() {
        let not_found = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"nodes \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"nodes"},"code":404}"#;
        assert_eq!(node_status(not_found), Err(Error::NotANode));
        assert_eq!(node_status(b"[]"), Err(Error::NotANode));
    }

    #[test]
    fn invalid_json_is_a_typed_error() {
        let cases: &[(&[u8], Error)] = &[
            (b"{\"kind\":\"Node\"", Error::JsonEnd),
            (b"{\"kind\":\"Node\"} x", Error::JsonTrailing { at: 16 }),
            (b"{\"kind\":\"No\\x\"}", Error::JsonEscape { at: 11 }),
            (b"{\"kind\":\"No\\u12\"}", Error::JsonEscape { at: 11 }),
            (b"{\"kind\":\"N\node\"}", Error::JsonControl { at: 10 }),
            (b"{\"kind\":\"N\xffde\"}", Error::JsonUtf8 { at: 10 }),
            (b"{\"a\":01}", Error::JsonUnexpected { at: 6 }),
            (b"{\"a\":-}", Error::JsonNumber { at: 5 }),
            (b"{\"a\":1.}", Error::JsonNumber { at: 5 }),
            (b"{\"a\":tru}", Error::JsonUnexpected { at: 5 }),
            (b"{\"a\":tr", Error::JsonEnd),
            (b"{\"a\" 1}", Error::JsonUnexpected { at: 5 }),
            (b"{\"a\":1,}", Error::JsonUnexpected { at: 7 }),
            (b"{a:1}", Error::JsonUnexpected { at: 1 }),
        ];
        for (input, want) in cases {
            assert_eq!(
                node_status(input),
                Err(*want),
                "{}",
                core::str::from_utf8(input).unwrap_or("?")
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut doc = [b'['; 200];
        doc[..7].copy_from_slice(b"{\"x\":[[");
        assert!(matches!(node_status(&doc), Err(Error::JsonTooDeep { .. })));
    }
}
