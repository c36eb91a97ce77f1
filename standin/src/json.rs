//! A JSON value built in code and written compactly; the stand-in only
//! ever produces JSON, so there is no parser.

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Str(String),
    Num(i64),
    Obj(Vec<(String, Json)>),
    Arr(Vec<Json>),
}

/// An object from fields in the order given (kept when written).
pub fn obj<const N: usize>(fields: [(&str, Json); N]) -> Json {
    Json::Obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

pub fn s(text: impl Into<String>) -> Json {
    Json::Str(text.into())
}

impl Json {
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Str(text) => write_str(text, out),
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

fn write_str(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_order_and_strings_are_escaped() {
        let v = obj([
            ("b", s("q\"uo\\te\n\u{1}")),
            ("a", Json::Arr(vec![Json::Num(-3), obj([])])),
        ]);
        assert_eq!(v.to_text(), r#"{"b":"q\"uo\\te\n\u0001","a":[-3,{}]}"#);
    }
}
