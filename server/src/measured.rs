//! Judging a quote against a measured-boot policy, with the node's TCG
//! event log.
//!
//! The quote is the only thing the TPM signed; the log is the node's
//! account of how each PCR got its value. The log is believed only once
//! its replay gives exactly the quoted values, and then only its digests:
//! an event's type and data lie outside what the TPM extended, so an
//! attacker may retype or relabel an event at will (they only name it in
//! messages). The decision itself is the quoted values against the
//! policy's allowed values; the log makes a refusal say which extend
//! differs ("PCR 11 sha256 event 31 (.initrd) differs: expected …").

use ember_proto::keys;
use ember_proto::msg::ErrorCode;
use ember_tpm::eventlog::{self, EventLog, Mismatch};
use ember_tpm::HashAlg;

use crate::refusal::Refusal;
use crate::store::reports::{Explained, Explanation};
use crate::store::{hex, Policy};

/// Refuses unless every PCR `policy` selects is quoted with an allowed
/// value; `quoted` is (index, value) in the quote's order, `log` the event
/// log the node sent (empty: none).
pub fn judge(policy: &Policy, quoted: &[(u8, &[u8])], log: &[u8]) -> Result<(), Refusal> {
    let selected: Vec<(u8, &[u8])> = quoted
        .iter()
        .copied()
        .filter(|(pcr, _)| policy.mask & (1 << pcr) != 0)
        .collect();
    for pcr in (0u8..24).filter(|i| policy.mask & (1 << i) != 0) {
        if !selected.iter().any(|(p, _)| *p == pcr) {
            return Err(Refusal::new(
                ErrorCode::PcrPolicyMismatch,
                format!("policy {} requires PCR {pcr}, not quoted", policy.scope),
            )
            .because(format!("PCR {pcr} required by policy, not quoted")));
        }
    }
    let bank = HashAlg::from_alg_id(policy.hash_alg).map_err(|_| {
        Refusal::new(
            ErrorCode::Internal,
            format!(
                "policy {} names unknown bank {:#x}",
                policy.scope, policy.hash_alg
            ),
        )
    })?;
    let log = replayed_log(policy, bank, &selected, log)?;
    // Every PCR that differs is named (a changed initrd changes the UKI's
    // image digest in PCR 4 and its .initrd extend in PCR 11).
    let refusals: Vec<Refusal> = selected
        .iter()
        .filter(|(pcr, value)| {
            !policy
                .allowed
                .iter()
                .any(|(p, v)| p == pcr && keys::ct_eq(v, value))
        })
        .map(|(pcr, value)| not_allowed(policy, bank, *pcr, value, log.as_ref()))
        .collect();
    match refusals.len() {
        0 => Ok(()),
        _ => {
            let reason: Vec<&str> = refusals.iter().map(|r| r.reason.as_ref()).collect();
            let detail: Vec<&str> = refusals.iter().map(|r| r.detail.as_str()).collect();
            let items = refusals
                .iter()
                .filter_map(|r| r.explanation.as_ref())
                .flat_map(|e| e.items.iter().cloned())
                .collect();
            let differing: Vec<(u8, &[u8])> = selected
                .iter()
                .copied()
                .filter(|(pcr, value)| {
                    !policy
                        .allowed
                        .iter()
                        .any(|(p, v)| p == pcr && keys::ct_eq(v, value))
                })
                .collect();
            Err(
                Refusal::new(ErrorCode::PcrPolicyMismatch, detail.join("; "))
                    .because(reason.join("; "))
                    .explained(Explanation {
                        items,
                        fix: Some(fix_command(policy, bank, &differing)),
                    }),
            )
        }
    }
}

/// The `ember policy set` line that allows what this node quoted: the
/// policy's own PCRs and allowed values, plus `add`. `policy set` replaces
/// a scope's values, so every value allowed now is on the line too. The
/// new policy judges values alone (a `--uki` policy's extends are not
/// kept): re-running the policy's `--uki` line with the UKI you deployed
/// is the other way, which the server cannot write for you.
pub fn fix_command(policy: &Policy, bank: HashAlg, add: &[(u8, &[u8])]) -> String {
    let mut cmd = String::from("ember policy set");
    if let Some(g) = policy.scope.strip_prefix("group:") {
        cmd += &format!(" --group {}", shell_word(g));
    } else if let Some(n) = policy.scope.strip_prefix("node:") {
        cmd += &format!(" --node {}", shell_word(n));
    }
    let pcrs: Vec<String> = (0u8..24)
        .filter(|i| policy.mask & (1 << i) != 0)
        .map(|i| i.to_string())
        .collect();
    cmd += &format!(" --pcrs {}", pcrs.join(","));
    if bank != HashAlg::Sha256 {
        cmd += &format!(" --bank {}", bank.name());
    }
    let mut values: Vec<(u8, &[u8])> = policy
        .allowed
        .iter()
        .map(|(p, v)| (*p, v.as_slice()))
        .collect();
    for (p, v) in add {
        if !values.iter().any(|(q, w)| q == p && w == v) {
            values.push((*p, v));
        }
    }
    // Allowed now first, the quoted values last: what the line adds shows.
    for (p, v) in values {
        cmd += &format!(" --value {p}={}", hex(v));
    }
    cmd
}

/// `s` as one POSIX shell word: bare when it is plain, else single-quoted.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@'));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The node's log, checked to replay to the quoted values; `None` when it
/// sent none and the policy does without.
fn replayed_log<'a>(
    policy: &Policy,
    bank: HashAlg,
    selected: &[(u8, &[u8])],
    bytes: &'a [u8],
) -> Result<Option<EventLog<'a>>, Refusal> {
    let refuse = |detail: String, reason: String| {
        Refusal::new(ErrorCode::EventLogMismatch, detail).because(reason)
    };
    if bytes.is_empty() {
        if policy.require_log {
            return Err(refuse(
                format!(
                    "the node sent no event log; policy {} requires one",
                    policy.scope
                ),
                "event log required by policy".into(),
            ));
        }
        return Ok(None);
    }
    // A policy of values only (recorded in lab mode, or `--value`) has no
    // extends to compare the log with: its values alone decide, as with
    // `--allow-without-event-log`. Holding its log to the quote would
    // refuse every boot that systemd-stub did not measure on its second
    // boot (the init's own PCR 11 extend is in no firmware log) while the
    // recorded first boot passed.
    if policy.events.is_empty() && !policy.require_log {
        return Ok(None);
    }
    let malformed = |e: ember_tpm::Error| {
        refuse(
            format!("event log ({} bytes) malformed: {e:?}", bytes.len()),
            "event log malformed".into(),
        )
    };
    let log = EventLog::parse(bytes).map_err(malformed)?;
    let pcrs = eventlog::replay(&log, bank).map_err(malformed)?;
    for (pcr, quoted) in selected {
        // PCRs 16-23 (debug, locality-reset) are never in a boot log.
        if *pcr >= 16 {
            continue;
        }
        let zero = vec![0u8; bank.digest_len()];
        let replayed = pcrs[*pcr as usize].as_deref().unwrap_or(&zero);
        if !keys::ct_eq(replayed, quoted) {
            // No policy change allows a log that does not replay: no fix.
            let item = Explained {
                pcr: Some(*pcr),
                what: format!("PCR {pcr} {}: the event log's replay", bank.name()),
                expected: hex(quoted),
                received: hex(replayed),
            };
            let explanation = Explanation {
                items: vec![item],
                fix: None,
            };
            return Err(refuse(
                format!(
                    "PCR {pcr} {}: the event log replays to {}, the quote has {}: something extended PCR {pcr} that the firmware's log does not record (an init measuring itself, a runtime after leave-initrd) or the log was edited",
                    bank.name(),
                    hex(replayed),
                    hex(quoted)
                ),
                format!("event log does not replay to quoted PCR {pcr}"),
            )
            .explained(explanation));
        }
    }
    Ok(Some(log))
}

/// The refusal for a quoted value the policy does not allow, naming the
/// first extend that differs when the policy knows its extends and the
/// node sent a log.
fn not_allowed(
    policy: &Policy,
    bank: HashAlg,
    pcr: u8,
    value: &[u8],
    log: Option<&EventLog<'_>>,
) -> Refusal {
    let plain = format!(
        "PCR {pcr} {} = {} is not allowed by policy {}",
        bank.name(),
        hex(value),
        policy.scope
    );
    let reason = format!("PCR {pcr} not allowed by policy");
    let allowed: Vec<String> = policy
        .allowed
        .iter()
        .filter(|(p, _)| *p == pcr)
        .map(|(_, v)| hex(v))
        .collect();
    let value_item = Explained {
        pcr: Some(pcr),
        what: format!("PCR {pcr} {} value", bank.name()),
        expected: match allowed.len() {
            0 => "no value allowed".into(),
            _ => allowed.join(" or "),
        },
        received: hex(value),
    };
    let explained = |items: Vec<Explained>| Explanation { items, fix: None };
    let Some(log) = log else {
        return Refusal::new(ErrorCode::PcrPolicyMismatch, plain)
            .because(reason)
            .explained(explained(vec![value_item]));
    };
    // Of the allowed values this PCR may take, the one whose extends the
    // log follows longest names the difference; of equals, the one with
    // the fewest extends. An allowed reset value (no extend at all: PCR 12
    // of a UKI booted with its own command line) has no stored events and
    // is the fewest, so a command line the policy does not know is named
    // "not in the policy; logged as …" with what the node logged.
    let zero = vec![0u8; bank.digest_len()];
    let reset_allowed = policy
        .allowed
        .iter()
        .any(|(p, v)| *p == pcr && keys::ct_eq(v, &zero));
    let no_events: &[eventlog::Expected] = &[];
    let candidates = policy
        .events
        .iter()
        .filter(|a| a.pcr == pcr)
        .map(|a| a.events.as_slice())
        .chain(reset_allowed.then_some(no_events));
    let closest: Option<Mismatch> = candidates
        .filter_map(|events| {
            let m = eventlog::compare(log, pcr, bank, events).ok()?.err()?;
            Some((m, events.len()))
        })
        .max_by_key(|(m, n)| (m.event.unwrap_or(usize::MAX), core::cmp::Reverse(*n)))
        .map(|(m, _)| m);
    match closest {
        Some(m) => {
            let reason = match m.event {
                Some(n) => format!("PCR {pcr} event {n} ({}) differs", m.label),
                None => format!("PCR {pcr} ({}) missing", m.label),
            };
            let digest = |d: &Option<Vec<u8>>| match d {
                Some(d) => hex(d),
                None => "nothing".into(),
            };
            let event_item = Explained {
                pcr: Some(pcr),
                what: match m.event {
                    Some(n) => format!("PCR {pcr} {} event {n} ({})", bank.name(), m.label),
                    None => format!(
                        "PCR {pcr} {} after the last logged event ({})",
                        bank.name(),
                        m.label
                    ),
                },
                expected: digest(&m.expected),
                received: digest(&m.measured),
            };
            Refusal::new(ErrorCode::PcrPolicyMismatch, format!("{m}; {plain}"))
                .because(reason)
                .explained(explained(vec![event_item, value_item]))
        }
        None => Refusal::new(ErrorCode::PcrPolicyMismatch, plain)
            .because(reason)
            .explained(explained(vec![value_item])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AllowedEvents;
    use ember_tpm::eventlog::{Expected, EV_NO_ACTION, EV_SEPARATOR};

    /// OVMF + swtpm booting a UKI (`ember uki build`), captured from the
    /// guest's binary_bios_measurements (the tpm crate's test data).
    const LOG: &[u8] = include_bytes!("../../tpm/src/testdata/ovmf-uki-eventlog.bin");
    const INITRD_EVENT: usize = 31;

    fn replayed(log: &[u8]) -> [Option<Vec<u8>>; 24] {
        eventlog::replay(&EventLog::parse(log).unwrap(), HashAlg::Sha256).unwrap()
    }

    /// The extends of `pcr` in the genuine log, labelled as a prediction would.
    fn extends(pcr: u8) -> Vec<Expected> {
        let log = EventLog::parse(LOG).unwrap();
        log.events()
            .map(Result::unwrap)
            .filter(|e| e.pcr == u32::from(pcr) && e.event_type != EV_NO_ACTION)
            .map(|e| Expected {
                label: e.describe(),
                digest: e.digest(HashAlg::Sha256).unwrap().to_vec(),
            })
            .collect()
    }

    /// A policy pinning PCRs 4 and 11 to the genuine log's values, with
    /// their extends.
    fn policy() -> Policy {
        let pcrs = replayed(LOG);
        let mut p = Policy {
            scope: "group:lab".into(),
            hash_alg: HashAlg::Sha256.alg_id(),
            mask: (1 << 4) | (1 << 11),
            record: false,
            allowed: vec![],
            events: vec![],
            require_log: true,
        };
        for pcr in [4u8, 11] {
            let value = pcrs[pcr as usize].clone().unwrap();
            p.allowed.push((pcr, value.clone()));
            p.events.push(AllowedEvents {
                pcr,
                value,
                events: extends(pcr),
            });
        }
        p
    }

    fn quote_of(log: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let pcrs = replayed(log);
        [4u8, 11]
            .iter()
            .map(|&i| (i, pcrs[i as usize].clone().unwrap()))
            .collect()
    }

    fn judge_with(p: &Policy, quote: &[(u8, Vec<u8>)], log: &[u8]) -> Result<(), Refusal> {
        let q: Vec<(u8, &[u8])> = quote.iter().map(|(i, v)| (*i, &v[..])).collect();
        judge(p, &q, log)
    }

    /// Bytes one parsed event takes in the log.
    fn event_len(e: &eventlog::Event<'_>) -> usize {
        12 + e.digests.iter().map(|(_, d)| 2 + d.len()).sum::<usize>() + 4 + e.data.len()
    }

    /// Byte offset of event `number` in `log`.
    fn event_offset(log: &[u8], number: usize) -> usize {
        let parsed = EventLog::parse(log).unwrap();
        let events: Vec<_> = parsed.events().map(Result::unwrap).collect();
        let mut at = log.len() - events.iter().map(event_len).sum::<usize>();
        for e in &events {
            if e.number == number {
                return at;
            }
            at += event_len(e);
        }
        panic!("no event {number}");
    }

    /// The genuine log with event `number`'s sha256 digest replaced.
    fn with_digest(number: usize, digest: &[u8; 32]) -> Vec<u8> {
        let mut log = LOG.to_vec();
        let at = event_offset(LOG, number) + 12 + 2; // pcr, type, count, alg
        log[at..at + 32].copy_from_slice(digest);
        log
    }

    #[test]
    fn the_genuine_boot_passes() {
        judge_with(&policy(), &quote_of(LOG), LOG).unwrap();
    }

    #[test]
    fn a_changed_initrd_is_refused_naming_pcr_11_and_the_initrd_event() {
        let evil = with_digest(INITRD_EVENT, &[0xEE; 32]);
        let r = judge_with(&policy(), &quote_of(&evil), &evil).unwrap_err();
        assert_eq!(r.code, ErrorCode::PcrPolicyMismatch);
        // Only the .initrd extend differs in this log: PCR 4 is genuine.
        assert_eq!(r.reason, "PCR 11 event 31 (.initrd) differs");
        assert!(
            r.detail
                .starts_with("PCR 11 sha256 event 31 (.initrd) differs: expected "),
            "{}",
            r.detail
        );
        assert!(
            r.detail.contains(&format!("measured {}", hex(&[0xEE; 32]))),
            "{}",
            r.detail
        );
        // The operator's explanation: the event's extend and the PCR's
        // value, each expected against received, and the line allowing it.
        let e = r.explanation.expect("explained");
        assert_eq!(e.items.len(), 2, "{e:?}");
        assert_eq!(e.items[0].what, "PCR 11 sha256 event 31 (.initrd)");
        assert_eq!(e.items[0].received, hex(&[0xEE; 32]));
        assert_ne!(e.items[0].expected, e.items[0].received);
        assert!(extends(11)
            .iter()
            .any(|x| hex(&x.digest) == e.items[0].expected));
        let quoted = hex(&quote_of(&evil)[1].1);
        assert_eq!(e.items[1].what, "PCR 11 sha256 value");
        assert_eq!(e.items[1].received, quoted);
        assert_eq!(e.items[1].expected, hex(&policy().allowed[1].1));
        let fix = e.fix.expect("a fix");
        let p = policy();
        assert_eq!(
            fix,
            format!(
                "ember policy set --group lab --pcrs 4,11 --value 4={} --value 11={} --value 11={quoted}",
                hex(&p.allowed[0].1),
                hex(&p.allowed[1].1)
            )
        );
    }

    #[test]
    fn fix_commands_quote_what_the_shell_would_read() {
        assert_eq!(shell_word("rack-a.1"), "rack-a.1");
        assert_eq!(shell_word("a b;$(x)'"), "'a b;$(x)'\\'''");
        let p = Policy {
            scope: "node:it's".into(),
            hash_alg: HashAlg::Sha384.alg_id(),
            mask: 1 << 7,
            record: false,
            allowed: vec![],
            events: vec![],
            require_log: false,
        };
        assert_eq!(
            fix_command(&p, HashAlg::Sha384, &[(7, &[0xab][..])]),
            "ember policy set --node 'it'\\''s' --pcrs 7 --bank sha384 --value 7=ab"
        );
    }

    #[test]
    fn a_log_that_does_not_replay_to_the_quote_is_refused() {
        // The genuine log with a quote whose PCR 11 got one more extend
        // (the runtime after leave-initrd, or a self-measuring init).
        let mut quote = quote_of(LOG);
        quote[1].1 = HashAlg::Sha256.digest(&[&quote[1].1, &[7u8; 32]]).unwrap();
        let r = judge_with(&policy(), &quote, LOG).unwrap_err();
        assert_eq!(r.code, ErrorCode::EventLogMismatch);
        assert_eq!(r.reason, "event log does not replay to quoted PCR 11");
        let e = r.explanation.expect("explained");
        assert_eq!(e.items[0].expected, hex(&quote[1].1));
        assert_eq!(
            e.items[0].received,
            hex(replayed(LOG)[11].as_ref().unwrap())
        );
        // No policy change allows a log that does not replay.
        assert_eq!(e.fix, None);
    }

    #[test]
    fn a_policy_of_values_only_is_judged_by_the_values_not_the_log() {
        // Recorded in lab mode from a boot whose PCR 11 the init extended
        // itself: the firmware's log does not replay to it, the values
        // decide. Another value is still refused.
        let mut quote = quote_of(LOG);
        quote[1].1 = HashAlg::Sha256.digest(&[&quote[1].1, &[7u8; 32]]).unwrap();
        let values_only = Policy {
            events: vec![],
            require_log: false,
            allowed: quote.clone(),
            ..policy()
        };
        judge_with(&values_only, &quote, LOG).unwrap();
        let mut other = quote.clone();
        other[1].1 = vec![0x55; 32];
        let r = judge_with(&values_only, &other, LOG).unwrap_err();
        assert_eq!(r.code, ErrorCode::PcrPolicyMismatch);
    }

    #[test]
    fn a_retyped_event_is_judged_by_its_digest() {
        let at = event_offset(LOG, INITRD_EVENT) + 4;
        // Retyped but the same digest: the same measurement, still allowed.
        let mut retyped = LOG.to_vec();
        retyped[at..at + 4].copy_from_slice(&EV_SEPARATOR.to_le_bytes());
        judge_with(&policy(), &quote_of(LOG), &retyped).unwrap();
        // A changed initrd whose event is retyped EV_NO_ACTION (as if it
        // extended nothing) to hide it: the log no longer replays to the
        // quote the TPM signed, which holds the changed initrd.
        let evil = with_digest(INITRD_EVENT, &[0xEE; 32]);
        let quote = quote_of(&evil);
        let mut hidden = evil.clone();
        hidden[at..at + 4].copy_from_slice(&EV_NO_ACTION.to_le_bytes());
        let r = judge_with(&policy(), &quote, &hidden).unwrap_err();
        assert_eq!(r.code, ErrorCode::EventLogMismatch, "{}", r.detail);
        // Or passed off as the genuine event (genuine digest in the log):
        // the replay differs from the quote just the same.
        let r = judge_with(&policy(), &quote, LOG).unwrap_err();
        assert_eq!(r.code, ErrorCode::EventLogMismatch, "{}", r.detail);
    }

    #[test]
    fn no_log_is_refused_where_the_policy_requires_one_else_values_decide() {
        let mut p = policy();
        let r = judge_with(&p, &quote_of(LOG), &[]).unwrap_err();
        assert_eq!(r.code, ErrorCode::EventLogMismatch);
        p.require_log = false;
        judge_with(&p, &quote_of(LOG), &[]).unwrap();
        let evil = with_digest(INITRD_EVENT, &[0xEE; 32]);
        let r = judge_with(&p, &quote_of(&evil), &[]).unwrap_err();
        assert_eq!(r.reason, "PCR 11 not allowed by policy");
    }

    #[test]
    fn a_malformed_or_unquoted_log_is_refused_not_a_panic() {
        let r = judge_with(&policy(), &quote_of(LOG), &LOG[..LOG.len() - 3]).unwrap_err();
        assert_eq!(r.code, ErrorCode::EventLogMismatch);
        let r = judge_with(&policy(), &quote_of(LOG)[..1], LOG).unwrap_err();
        assert_eq!(r.reason, "PCR 11 required by policy, not quoted");
    }

    /// PCR 12 as `ember policy set --uki` pins it: nothing measured (the
    /// UKI's own command line) or one of `entries`' extends.
    fn with_pcr12(entries: &[Vec<Expected>]) -> Policy {
        let mut p = policy();
        p.mask |= 1 << 12;
        p.allowed.push((12, vec![0; 32]));
        for events in entries {
            let mut value = vec![0u8; 32];
            for e in events {
                value = HashAlg::Sha256.digest(&[&value, &e.digest]).unwrap();
            }
            p.allowed.push((12, value.clone()));
            p.events.push(AllowedEvents {
                pcr: 12,
                value,
                events: events.clone(),
            });
        }
        p
    }

    #[test]
    fn a_command_line_the_policy_does_not_know_is_named_as_logged() {
        let entry = |label: &str, d: u8| Expected {
            label: label.into(),
            digest: vec![d; 32],
        };
        let p = with_pcr12(&[
            vec![entry("EV_IPL load options", 1)],
            vec![
                entry("EV_IPL slot a's entry", 2),
                entry("EV_IPL slot a's entry", 2),
            ],
        ]);
        // The genuine log measures nothing into PCR 12: allowed.
        let mut quote = quote_of(LOG);
        quote.push((12, vec![0; 32]));
        judge_with(&p, &quote, LOG).unwrap();
        // Event 34 moved to PCR 12: a command line none of the paths has.
        let mut evil = LOG.to_vec();
        let at = event_offset(LOG, 34);
        evil[at..at + 4].copy_from_slice(&12u32.to_le_bytes());
        let mut quote = quote_of(&evil);
        quote.push((12, replayed(&evil)[12].clone().unwrap()));
        let r = judge_with(&p, &quote, &evil).unwrap_err();
        assert_eq!(r.code, ErrorCode::PcrPolicyMismatch);
        assert!(
            r.reason
                .starts_with("PCR 12 event 34 (not in the policy; logged as "),
            "{}",
            r.reason
        );
    }
}
