//! Just enough JSON for the readiness probe: a bounded recursive-descent
//! parser into a small tree. The API server's answer is untrusted input:
//! depth and size are capped, and nothing here panics.

use alloc::string::String;
use alloc::vec::Vec;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Kept as text: the probe never needs a number's value, and float
    /// parsing would cost the init ~14 KB.
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

const MAX_DEPTH: usize = 32;
pub const MAX_INPUT: usize = 1 << 20;

impl Value {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> &[Value] {
        match self {
            Value::Array(items) => items,
            _ => &[],
        }
    }
}

pub fn parse(input: &[u8]) -> Option<Value> {
    if input.len() > MAX_INPUT {
        return None;
    }
    let mut p = Parser { s: input, i: 0 };
    let v = p.value(0)?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.s.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.eat(b"}") {
                    return Some(Value::Object(fields));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    if !self.eat(b":") {
                        return None;
                    }
                    fields.push((key, self.value(depth + 1)?));
                    self.ws();
                    if self.eat(b"}") {
                        return Some(Value::Object(fields));
                    }
                    if !self.eat(b",") {
                        return None;
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b"]") {
                    return Some(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b"]") {
                        return Some(Value::Array(items));
                    }
                    if !self.eat(b",") {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(Value::String),
            b't' => self.eat(b"true").then_some(Value::Bool(true)),
            b'f' => self.eat(b"false").then_some(Value::Bool(false)),
            b'n' => self.eat(b"null").then_some(Value::Null),
            _ => self.number(),
        }
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        while self.i < self.s.len()
            && matches!(
                self.s[self.i],
                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
            )
        {
            self.i += 1;
        }
        let text = core::str::from_utf8(&self.s[start..self.i]).ok()?;
        valid_number(text).then(|| Value::Number(String::from(text)))
    }

    fn string(&mut self) -> Option<String> {
        if !self.eat(b"\"") {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4)?;
                            self.i += 4;
                            let code =
                                u32::from_str_radix(core::str::from_utf8(hex).ok()?, 16).ok()?;
                            let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                c => out.push(c),
            }
        }
    }
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn valid_number(t: &str) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    if b.get(i) == Some(&b'0') {
        i += 1;
    } else if !digits(&mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// Whether a Kubernetes Node object reports condition Ready=True.
pub fn node_is_ready(node: &Value) -> bool {
    node.get("status")
        .and_then(|s| s.get("conditions"))
        .map(|c| {
            c.as_array().iter().any(|cond| {
                cond.get("type").and_then(Value::as_str) == Some("Ready")
                    && cond.get("status").and_then(Value::as_str) == Some("True")
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from a real `kubectl get node -o json`.
    const NODE: &str = r#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"node-1","labels":{"kubernetes.io/os":"linux"}},
      "status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status \u00e9"}],
      "nodeInfo":{"kubeletVersion":"v1.31.1+rke2r1"},"capacity":{"cpu":"2"},"x":[1,-2.5e3,true,null]}}"#;

    #[test]
    fn reads_a_ready_node() {
        let v = parse(NODE.as_bytes()).unwrap();
        assert!(node_is_ready(&v));
        assert_eq!(
            v.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str),
            Some("node-1")
        );
    }

    #[test]
    fn not_ready_and_not_found_are_not_ready() {
        let v = parse(
            NODE.replace(r#""Ready","status":"True""#, r#""Ready","status":"False""#)
                .as_bytes(),
        )
        .unwrap();
        assert!(!node_is_ready(&v));
        let status = parse(br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#).unwrap();
        assert!(!node_is_ready(&status));
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "\"\\u12\"",
            "tru",
            "{\"a\" 1}",
            "[[[[",
            "\"\\q\"",
            "01",
            "1.",
            "-",
            "1e",
            "+1",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(parse(deep.as_bytes()), None);
    }
}
