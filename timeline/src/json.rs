//! The timeline as JSON, for scripts (the benchmark aggregates these).
//! Written by hand: a fixed, flat shape needs no serialisation framework.

use std::fmt::Write;

use super::model::{PhaseState, Timeline};

pub fn render(t: &Timeline) -> String {
    let mut s = String::from("{");
    let _ = write!(
        s,
        "\"boots_in_log\":{},\"boot\":{},",
        t.boots_in_log, t.boot
    );
    let _ = write!(s, "\"handover_ms\":{},", opt(t.handover_ms));
    let _ = write!(s, "\"init_started_ms\":{},", opt(t.init_started_ms));
    let _ = write!(
        s,
        "\"init_tag\":{},",
        t.init_tag
            .as_deref()
            .map(string)
            .unwrap_or_else(|| "null".into())
    );
    let _ = write!(s, "\"end_ms\":{},\"phases\":[", t.end_ms);
    for (i, p) in t.phases.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let end = match p.state {
            PhaseState::Running => "null".to_string(),
            _ => p.end_ms(t.end_ms).to_string(),
        };
        let took = match p.state {
            PhaseState::Running => "null".to_string(),
            _ => p.took_ms(t.end_ms).to_string(),
        };
        let _ = write!(
            s,
            "{{\"name\":{},\"status\":\"{}\",\"start_ms\":{},\"end_ms\":{end},\"took_ms\":{took}",
            string(&p.name),
            p.status(),
            p.start_ms
        );
        match p.cpu_ms {
            Some(cpu) => {
                let _ = write!(s, ",\"cpu_ms\":{cpu}");
            }
            None => s.push_str(",\"cpu_ms\":null"),
        }
        if let PhaseState::Failed { reason, .. } = &p.state {
            let _ = write!(s, ",\"reason\":{}", string(reason));
        }
        s.push('}');
    }
    s.push_str("],\"marks\":[");
    for (i, m) in t.marks.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{{\"name\":{},\"at_ms\":{}}}", string(&m.name), m.at_ms);
    }
    s.push_str("],\"metrics\":{");
    for (i, (k, v)) in t.metrics.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{}:{v}", string(k));
    }
    s.push_str("}}\n");
    s
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "null".into())
}

fn string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Which;

    #[test]
    fn running_phases_have_null_ends_and_reasons_are_escaped() {
        let log = "[ 10] ember: phase=a status=start\n[ 20] ember: phase=b status=start\n\
                   [ 30] ember: phase=b status=failed took=10ms cpu=4ms reason=say \"no\"\\\n";
        let t = Timeline::from_log(log, Which::Last).unwrap();
        let j = render(&t);
        assert!(
            j.contains(
                r#"{"name":"a","status":"running","start_ms":10,"end_ms":null,"took_ms":null,"cpu_ms":null}"#
            ),
            "{j}"
        );
        assert!(j.contains(r#""reason":"say \"no\"\\""#), "{j}");
        assert!(j.contains(r#""took_ms":10,"cpu_ms":4,"#), "{j}");
        assert!(
            j.contains(r#""marks":[{"name":"init started","at_ms":10}]"#),
            "{j}"
        );
    }
}
