//! The one subscriber for `ember`'s `tracing` events (the server library's
//! and the tool's own): text lines for operators, or JSON lines for a log
//! pipeline (`ember serve --log-format json`).
//!
//! Text is the format operators and tests have always read:
//! `PREFIX: MESSAGE k=v k=v`, no timestamp (journald and friends add one),
//! no level (a warning says so in its words). The prefix names who speaks:
//! `ember-serve` for the server library, `ember NAME` for the tool's
//! `NAME_cmd` module, `ember` for the rest. How a field value is written
//! depends on how the event recorded it:
//! - a string (`detail = text.as_str()`) is free text: quoted and escaped
//!   as Rust's `{:?}` does, so a space or a newline in it cannot forge
//!   another field or another line;
//! - a displayed or debugged value (`node = %name`, `detail = ?err`) is a
//!   token: written as it is;
//! - numbers and booleans as they are (floats as `{:?}`: `12.0`, not `12`).
//!
//! JSON is one object per line: `timestamp` (RFC 3339, UTC), `level`,
//! `target`, `message` and `fields` (the event's other fields, numbers as
//! numbers). An event with no message of its own (the `step=...` request
//! lines) gets its text line's fields as `message`, so every line reads.
//!
//! Announcements (target [`ember_server::ANNOUNCE`]: where the server
//! listens, which files to bundle into initrds) go to stdout, where scripts
//! read them; everything else goes to stderr.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `ember-serve: step=finish node=n1 outcome=ok ...`
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message, fields.
    Json,
}

/// Installs the process's subscriber: `format` lines, announcements on
/// stdout, the rest on stderr. Ember's own events from INFO up; the
/// libraries underneath (none emit today) only from WARN.
pub fn init(format: LogFormat) {
    let writer = std::io::stdout
        .with_filter(|m: &tracing::Metadata<'_>| m.target() == ember_server::ANNOUNCE)
        .or_else(std::io::stderr);
    // Only fails when a subscriber is already set, which main never does.
    let _ = tracing_subscriber::registry()
        .with(layer(format, writer).with_filter(filter()))
        .try_init();
}

/// Which events are written at all.
fn filter() -> Targets {
    Targets::new()
        .with_target("ember_server", LevelFilter::INFO)
        .with_target("ember", LevelFilter::INFO)
        .with_default(LevelFilter::WARN)
}

/// The formatting layer over `writer` (tests hand it a buffer).
fn layer<S, W>(format: LogFormat, writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .event_format(Lines(format))
        .with_writer(writer)
}

/// Who speaks in a text line, from the event's target.
fn prefix(target: &str) -> String {
    let mut path = target.split("::");
    match (path.next(), path.next()) {
        (Some("ember_server"), _) => "ember-serve".into(),
        (Some("ember"), Some(module)) => match module.strip_suffix("_cmd") {
            Some(cmd) => format!("ember {cmd}"),
            None => "ember".into(),
        },
        _ => "ember".into(),
    }
}

/// One field value, as the event recorded it.
#[derive(Debug, PartialEq)]
enum Value {
    /// Free text: quoted in text lines.
    Text(String),
    /// A `%value` or `?value`: written as it is.
    Token(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// An event's message and its other fields, in the order given.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl Fields {
    fn of(event: &Event<'_>) -> Fields {
        let mut f = Fields::default();
        event.record(&mut f);
        f
    }

    fn push(&mut self, field: &Field, v: Value) {
        match (field.name(), v) {
            ("message", Value::Text(s) | Value::Token(s)) => self.message = Some(s),
            (name, v) => self.fields.push((name, v)),
        }
    }

    /// The text line after the prefix: the message, then `k=v` pairs.
    fn text(&self) -> String {
        let mut out = self.message.clone().unwrap_or_default();
        for (name, v) in &self.fields {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = match v {
                Value::Text(s) => write!(out, "{name}={s:?}"),
                Value::Token(s) => write!(out, "{name}={s}"),
                Value::I64(n) => write!(out, "{name}={n}"),
                Value::U64(n) => write!(out, "{name}={n}"),
                Value::F64(n) => write!(out, "{name}={n:?}"),
                Value::Bool(b) => write!(out, "{name}={b}"),
            };
        }
        out
    }

    /// The fields as a JSON object, in the order given (serde_json's own
    /// map would sort them).
    fn json(&self) -> String {
        let pairs: Vec<String> = self
            .fields
            .iter()
            .map(|(name, v)| {
                let v = match v {
                    Value::Text(s) | Value::Token(s) => serde_json::Value::from(s.as_str()),
                    Value::I64(n) => (*n).into(),
                    Value::U64(n) => (*n).into(),
                    // NaN and infinities have no JSON number: null.
                    Value::F64(n) => (*n).into(),
                    Value::Bool(b) => (*b).into(),
                };
                format!("{}:{v}", serde_json::Value::from(*name))
            })
            .collect();
        format!("{{{}}}", pairs.join(","))
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::Text(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::Token(format!("{value:?}")));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
}

/// The event formatter for both formats.
struct Lines(LogFormat);

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let f = Fields::of(event);
        match self.0 {
            LogFormat::Text => writeln!(w, "{}: {}", prefix(meta.target()), f.text()),
            LogFormat::Json => {
                let mut timestamp = String::new();
                SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
                let message = match &f.message {
                    Some(m) => m.clone(),
                    None => f.text(),
                };
                let s = |v: &str| serde_json::Value::from(v).to_string();
                writeln!(
                    w,
                    "{{\"timestamp\":{},\"level\":{},\"target\":{},\"message\":{},\"fields\":{}}}",
                    s(&timestamp),
                    s(level(meta.level())),
                    s(meta.target()),
                    s(&message),
                    f.json()
                )
            }
        }
    }
}

fn level(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// What `emit` logs in `format`, through the same filter as `init`.
    fn capture(format: LogFormat, emit: impl FnOnce()) -> String {
        let buf = Buf::default();
        let sub =
            tracing_subscriber::registry().with(layer(format, buf.clone()).with_filter(filter()));
        tracing::subscriber::with_default(sub, emit);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    /// The server's request line, as `ember_server::http` emits it.
    fn request_line() {
        let (step, node, peer) = ("finish", "node-a", "127.0.0.1:5000");
        tracing::info!(
            target: "ember_server::http",
            step = %step,
            node = %node,
            outcome = %"pcr-policy-mismatch",
            status = 403u16,
            ms = 12.0f64,
            peer = %peer,
            reason = "pcr-policy-mismatch",
            detail = "PCR 7 differs: \"expected\"\nnext",
        );
    }

    #[test]
    fn text_lines_are_the_operators_format() {
        let out = capture(LogFormat::Text, || {
            request_line();
            tracing::warn!(target: "ember_server", "--max-connections 9 lowered to 8: the open-files limit is 80");
            tracing::warn!(target: "ember::serve_cmd", "LAB MODE");
            tracing::error!(target: "ember", "error: {}", "no such file");
        });
        assert_eq!(
            out,
            "ember-serve: step=finish node=node-a outcome=pcr-policy-mismatch status=403 ms=12.0 \
             peer=127.0.0.1:5000 reason=\"pcr-policy-mismatch\" \
             detail=\"PCR 7 differs: \\\"expected\\\"\\nnext\"\n\
             ember-serve: --max-connections 9 lowered to 8: the open-files limit is 80\n\
             ember serve: LAB MODE\n\
             ember: error: no such file\n"
        );
    }

    #[test]
    fn json_lines_carry_timestamp_level_target_message_and_fields() {
        let out = capture(LogFormat::Json, || {
            request_line();
            tracing::info!(target: "ember_server::announce", "listening on https://127.0.0.1:1");
        });
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        let r = &lines[0];
        assert_eq!(r["level"], "INFO");
        assert_eq!(r["target"], "ember_server::http");
        assert!(r["message"]
            .as_str()
            .unwrap()
            .starts_with("step=finish node=node-a"));
        let f = &r["fields"];
        let mut keys: Vec<&String> = f.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["detail", "ms", "node", "outcome", "peer", "reason", "status", "step"]
        );
        // In the order the event gave them (parsing above sorts them).
        assert!(out
            .lines()
            .next()
            .unwrap()
            .contains(r#""fields":{"step":"finish","node":"node-a","#));
        assert_eq!(f["status"], 403);
        assert_eq!(f["ms"], 12.0);
        assert_eq!(f["reason"], "pcr-policy-mismatch");
        assert_eq!(f["detail"], "PCR 7 differs: \"expected\"\nnext");
        let ts = r["timestamp"].as_str().unwrap();
        assert!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        assert_eq!(lines[1]["message"], "listening on https://127.0.0.1:1");
        assert_eq!(lines[1]["fields"], serde_json::json!({}));
    }

    #[test]
    fn only_ember_events_below_warn() {
        let out = capture(LogFormat::Text, || {
            tracing::info!(target: "hyper::proto", "chatter");
            tracing::debug!(target: "ember_server::conn", "detail");
            tracing::warn!(target: "rustls", "a warning");
        });
        assert_eq!(out, "ember: a warning\n");
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix("ember_server"), "ember-serve");
        assert_eq!(prefix("ember_server::conn"), "ember-serve");
        assert_eq!(prefix("ember::attest_cmd"), "ember attest");
        assert_eq!(prefix("ember::replay"), "ember");
        assert_eq!(prefix("ember"), "ember");
    }
}
