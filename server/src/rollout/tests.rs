//! The engine over a real store (SQLite in a scratch folder), on the
//! test's own clock: 200 nodes whose boots are written the way Finish and
//! Report write them (an attestation with the UKI the quote identified, a
//! Joined report, the floor a Joined report on that session raises).

use super::engine::{self, Request};
use super::plan::{NodeState, RolloutState, WaveSize};
use crate::store::rollouts;
use crate::store::tests::scratch;
use crate::store::{images, insert_node, open, reports, Db, Node};

const A: [u8; 32] = [0xaa; 32];
const B: [u8; 32] = [0xbb; 32];
const A_SCRIPT: [u8; 32] = [0x1a; 32];
const B_SCRIPT: [u8; 32] = [0x1b; 32];
// Monday 2026-12-07 16:50 UTC.
const MON_1650: i64 = 1_796_601_600_000 + (16 * 60 + 50) * 60_000;
const MIN: i64 = 60_000;

/// How a simulated node's boot goes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Boot {
    /// Quotes the new UKI, Joins; Report blesses it (the floor rises).
    Upgrades,
    /// Its new slot fails; boot counting brings it back on the old UKI,
    /// where it attests and Joins.
    BackOnOld,
    /// Attests on the old UKI but reports Joined all the same, as a node
    /// lying about its upgrade would: its floor stays.
    ClaimsJoinedOnOld,
    /// Never comes back.
    Silent,
}

fn boot(db: &mut Db, n: &Node, how: Boot) {
    let mut tx = db.transaction().unwrap();
    let image = match how {
        Boot::Upgrades => B,
        Boot::BackOnOld | Boot::ClaimsJoinedOnOld => A,
        Boot::Silent => return,
    };
    let r = reports::add(&mut tx, n.id, reports::Outcome::Attested, None, "").unwrap();
    reports::set_boot_image(&mut tx, r, &image).unwrap();
    reports::add(&mut tx, n.id, reports::Outcome::Joined, None, "").unwrap();
    // What rollback::bless does for the session's UKI.
    let epoch = images::by_sha256(&mut tx, &image).unwrap().unwrap().epoch;
    images::raise_floor(&mut tx, n.id, epoch).unwrap();
    tx.commit().unwrap();
}

fn fleet(db: &mut Db, nodes: usize) -> Vec<Node> {
    let mut tx = db.transaction().unwrap();
    images::register(&mut tx, &A, 1, "a.efi").unwrap();
    images::register(&mut tx, &B, 1, "b.efi").unwrap();
    let fleet: Vec<Node> = (0..nodes)
        .map(|i| {
            let mut ek = [0u8; 32];
            ek[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            insert_node(&mut tx, &ek, None, &format!("node-{i:03}"), "fleet", "t").unwrap()
        })
        .collect();
    tx.commit().unwrap();
    // Every node runs A and blessed it.
    for n in &fleet {
        boot(db, n, Boot::BackOnOld);
    }
    fleet
}

fn request(windows: Vec<String>) -> Request {
    Request {
        group: "fleet".into(),
        target: B,
        target_script: B_SCRIPT,
        previous: A,
        previous_script: A_SCRIPT,
        canary: 2,
        wave_size: WaveSize::Percent(25),
        max_in_flight: 20,
        failure_budget: 1,
        soak_ms: 2 * MIN,
        timeout_ms: 10 * MIN,
        auto_revert: true,
        max_rebooting: 20,
        windows,
        by: "uid 0".into(),
    }
}

fn states(db: &mut Db, id: i64) -> Vec<(String, u32, NodeState)> {
    rollouts::nodes(db, id)
        .unwrap()
        .into_iter()
        .map(|n| (n.name, n.wave, n.state))
        .collect()
}

fn print_timeline(db: &mut Db, id: i64, t0: i64) -> Vec<String> {
    let events = rollouts::events(db, id).unwrap();
    eprintln!("rollout {id} timeline:");
    for (at, text) in &events {
        let s = (at - t0) / 1000;
        eprintln!(
            "  +{:02}:{:02}:{:02}  {text}",
            s / 3600,
            s / 60 % 60,
            s % 60
        );
    }
    events.into_iter().map(|(_, t)| t).collect()
}

#[test]
fn two_hundred_nodes_canary_waves_window_halt_and_auto_revert() {
    let (_d, s) = scratch();
    let mut db = open(&s, None).unwrap();
    let fleet = fleet(&mut db, 200);
    let by_name = |name: &str| fleet.iter().find(|n| n.name == name).unwrap().clone();
    let mut tx = db.transaction().unwrap();
    let window = "Mon-Fri 09:00-17:00 UTC".to_string();
    let (r, sizes) = engine::start(&mut tx, &request(vec![window]), MON_1650).unwrap();
    tx.commit().unwrap();
    assert_eq!(sizes, [2, 50, 50, 50, 48]);

    // The injected failures: in wave 2 one node claims Joined on the old
    // UKI (within budget); in wave 3 one comes back on its old slot and
    // one never returns (over budget: halt, auto-revert).
    let liar = "node-060";
    let back_on_old = "node-110";
    let silent = "node-120";
    let mut now = MON_1650;
    let mut handed_seen = std::collections::HashSet::new();
    let mut closed_with_waiting = false;
    for _ in 0..2000 {
        engine::tick_all(&mut db, now).unwrap();
        let ro = rollouts::get(&mut db, r.id).unwrap().unwrap();
        if ro.state != RolloutState::Running {
            break;
        }
        let nodes = rollouts::nodes(&mut db, r.id).unwrap();
        let handed: Vec<_> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Handed)
            .collect();
        assert!(handed.len() <= 20, "max in flight");
        // What a handed node's next network boot gets: the new UKI;
        // everyone else keeps the old one.
        for n in &nodes {
            let (script, _) = engine::boot_script(&mut db, n.node_id).unwrap().unwrap();
            assert_eq!(script == B_SCRIPT, n.state.boots_target(), "{n:?}");
        }
        let idle = handed.is_empty();
        for n in handed {
            if !handed_seen.insert(n.node_id) {
                continue;
            }
            let how = match n.name.as_str() {
                x if x == liar => Boot::ClaimsJoinedOnOld,
                x if x == back_on_old => Boot::BackOnOld,
                x if x == silent => Boot::Silent,
                _ => Boot::Upgrades,
            };
            boot(&mut db, &by_name(&n.name), how);
        }
        // A closed window with nothing in flight: skip ahead.
        if ro.reason.contains("maintenance window closed") && idle {
            closed_with_waiting = true;
            now += 30 * MIN;
            continue;
        }
        now += 30_000;
    }
    let t = print_timeline(&mut db, r.id, MON_1650);
    let ro = rollouts::get(&mut db, r.id).unwrap().unwrap();
    assert_eq!(ro.state, RolloutState::Halted, "{}", ro.reason);
    assert!(closed_with_waiting, "the window closed mid-rollout");
    assert!(
        t.iter().any(|l| l.contains("maintenance window closed")),
        "{t:?}"
    );
    assert!(t.iter().any(|l| l.contains("maintenance window open")));
    assert_eq!(ro.wave, 3);
    assert!(ro
        .reason
        .contains("wave 3: 2 failed, over its failure budget of 1"));
    assert!(ro
        .reason
        .contains(&format!("{back_on_old} (came back on UKI aaaaaaaaaaaaaaaa")));
    assert!(ro
        .reason
        .contains(&format!("{silent} (no attested boot within 600 s")));
    let st = states(&mut db, r.id);
    let get = |name: &str| st.iter().find(|(n, ..)| n == name).unwrap().2;
    // The liar was not counted as upgraded.
    assert_eq!(get(liar), NodeState::Failed);
    // Wave 3: every node not upgraded was handed the old UKI back.
    for (name, wave, state) in &st {
        match wave {
            0..=2 if name != liar => assert_eq!(*state, NodeState::Upgraded, "{name}"),
            3 => assert!(
                matches!(state, NodeState::Upgraded | NodeState::Reverted),
                "{name} {state:?}"
            ),
            4 => assert_eq!(*state, NodeState::Waiting, "{name}"),
            _ => {}
        }
    }
    assert_eq!(get(back_on_old), NodeState::Reverted);
    assert_eq!(get(silent), NodeState::Reverted);
    let reverted = by_name(silent);
    assert_eq!(
        engine::boot_script(&mut db, reverted.id)
            .unwrap()
            .unwrap()
            .0,
        A_SCRIPT
    );
    assert!(t
        .iter()
        .any(|l| l.starts_with("auto-revert: handed the old UKI aaaaaaaaaaaaaaaa back to")));
    // Halted stays halted: more ticks hand nothing out.
    engine::tick_all(&mut db, now + 60 * MIN).unwrap();
    assert_eq!(states(&mut db, r.id), st);
    // Resume does not override a halt; abort --revert says what it did.
    let mut tx = db.transaction().unwrap();
    let refused = engine::resume(&mut tx, "fleet", "uid 0", now).unwrap_err();
    assert!(refused.to_string().contains("is halted"), "{refused}");
    let said = engine::abort(&mut tx, "fleet", true, "uid 0", now).unwrap();
    tx.commit().unwrap();
    eprintln!("{}", said.join("\n"));
    assert!(said[0].contains("aborted by uid 0 while halted"));
    assert!(said
        .iter()
        .any(|l| l.contains("abort --revert: handed the old UKI")));
    assert!(said
        .iter()
        .any(|l| l.contains("upgraded node(s) keep UKI bbbbbbbbbbbbbbbb")));
    assert_eq!(get_state(&mut db, r.id, liar), NodeState::Reverted);
    assert!(
        said.iter()
            .any(|l| l.contains("back to 1 node(s): node-060")),
        "{said:?}"
    );
    assert_eq!(get_state(&mut db, r.id, "node-199"), NodeState::Waiting);
}

fn get_state(db: &mut Db, id: i64, name: &str) -> NodeState {
    states(db, id)
        .into_iter()
        .find(|(n, ..)| n == name)
        .unwrap()
        .2
}

#[test]
fn operator_commands_refuse_what_does_not_apply() {
    let (_d, s) = scratch();
    let mut db = open(&s, None).unwrap();
    fleet(&mut db, 5);
    let mut tx = db.transaction().unwrap();
    let backwards = Request {
        target: A,
        previous: B,
        ..request(vec![])
    };
    assert!(matches!(
        engine::start(&mut tx, &backwards, 0),
        Err(engine::Error::NotOrdered { .. } | engine::Error::NotNewer { .. })
    ));
    let unordered = Request {
        target: [0xcc; 32],
        ..request(vec![])
    };
    assert!(matches!(
        engine::start(&mut tx, &unordered, 0),
        Err(engine::Error::NotOrdered { .. })
    ));
    assert!(matches!(
        engine::start(&mut tx, &request(vec!["Someday 09:00-10:00".into()]), 0),
        Err(engine::Error::BadWindow(_))
    ));
    let empty = Request {
        group: "nobody".into(),
        ..request(vec![])
    };
    assert!(matches!(
        engine::start(&mut tx, &empty, 0),
        Err(engine::Error::EmptyGroup(_))
    ));
    let (r, _) = engine::start(&mut tx, &request(vec![]), 0).unwrap();
    assert!(matches!(
        engine::start(&mut tx, &request(vec![]), 0),
        Err(engine::Error::GroupBusy { id, .. }) if id == r.id
    ));
    engine::pause(&mut tx, "fleet", "uid 0", 1).unwrap();
    assert!(engine::pause(&mut tx, "fleet", "uid 0", 1).is_err());
    // Paused: a tick hands nothing out.
    let ro = rollouts::get(&mut tx, r.id).unwrap().unwrap();
    engine::tick(&mut tx, ro, 2).unwrap();
    assert!(rollouts::nodes(&mut tx, r.id)
        .unwrap()
        .iter()
        .all(|n| n.state == NodeState::Waiting));
    engine::resume(&mut tx, "fleet", "uid 0", 3).unwrap();
    let ro = rollouts::get(&mut tx, r.id).unwrap().unwrap();
    engine::tick(&mut tx, ro, 4).unwrap();
    let handed = rollouts::nodes(&mut tx, r.id)
        .unwrap()
        .iter()
        .filter(|n| n.state == NodeState::Handed)
        .count();
    assert_eq!(handed, 2, "the canaries");
    let said = engine::abort(&mut tx, "fleet", false, "uid 0", 5).unwrap();
    assert!(
        said[1].contains("2 node(s) in flight keep UKI bbbbbbbbbbbbbbbb"),
        "{said:?}"
    );
    assert!(engine::abort(&mut tx, "fleet", true, "uid 0", 6).is_err());
    tx.commit().unwrap();
}

#[test]
fn reboot_locks_admit_at_most_n_and_only_their_holder_releases() {
    let (_d, s) = scratch();
    let mut db = open(&s, None).unwrap();
    let f = fleet(&mut db, 3);
    let mut tx = db.transaction().unwrap();
    assert_eq!(engine::max_rebooting(&mut tx, "fleet").unwrap(), 1);
    assert!(rollouts::take_lock(&mut tx, f[0].id, "fleet", 1, 0)
        .unwrap()
        .is_ok());
    // Taking it again is a no-op; another node is refused and told who holds it.
    assert!(rollouts::take_lock(&mut tx, f[0].id, "fleet", 1, 0)
        .unwrap()
        .is_ok());
    assert_eq!(
        rollouts::take_lock(&mut tx, f[1].id, "fleet", 1, 0).unwrap(),
        Err(vec!["node-000".to_string()])
    );
    // Releasing what it does not hold frees nothing of another's.
    assert!(!rollouts::release_lock(&mut tx, f[1].id).unwrap());
    assert_eq!(
        rollouts::lock_holders(&mut tx, "fleet").unwrap(),
        ["node-000"]
    );
    assert!(rollouts::release_lock(&mut tx, f[0].id).unwrap());
    assert!(rollouts::take_lock(&mut tx, f[1].id, "fleet", 1, 0)
        .unwrap()
        .is_ok());
    tx.commit().unwrap();
}
