//! The boot server's rollback floor, as an attacker meets it. The policy
//! allows two genuine UKIs, an older and a newer release (`ember policy set
//! --uki older.efi --uki newer.efi`); a host-side swtpm plays the firmware
//! and systemd-stub for each boot (a fresh swtpm start is a reboot), as in
//! `measured_boot.rs`. Once the node blessed the newer UKI (reported
//! Joined after booting it), the older one, genuine and allowed, gets no
//! overlay: refused at Finish with `boot-image-rollback`, named in the
//! server's log and `ember nodes`. An upgrade, a failed upgrade falling
//! back, and the operator's deliberate `ember nodes allow-rollback` still
//! work; forged, expired and late reports do not move the floor; replicas
//! on one PostgreSQL agree on it.

use std::path::{Path, PathBuf};

use ember_proto::client::{self, Credential, Transport, Url};
use ember_proto::host::HttpsClient;
use ember_proto::msg::{self, encode, ErrorCode, Outcome, ReportRequest, PROTOCOL_VERSION};
use ember_proto::tpm::TpmAttestor;
use ember_tests::eventlog::{self, measurements, LogEvent};
use ember_tests::postgres::Postgres;
use ember_tests::proxy::DropProxy;
use ember_tests::qemu::{build_initrd, build_uki};
use ember_tests::server::{EmberServer, Run};
use ember_tests::swtpm::Swtpm;
use ember_tests::ScratchDir;
use ember_tpm::{SocketTransport, Tpm};
use sha2::{Digest, Sha256};

const CMDLINE: &str = "console=ttyS0 panic=-1 ember.iface=eth0";

/// One genuine UKI: its file, what booting it extends, its SHA-256.
struct Release {
    path: PathBuf,
    boot: Vec<LogEvent>,
    sha256: String,
}

impl Release {
    fn build(dir: &Path, initrd: &Path, name: &str) -> Release {
        Release::build_with(
            dir,
            initrd,
            name,
            &format!("{CMDLINE} ember.release={name}"),
            &[],
        )
    }

    /// A release of `ember uki build` with `cmdline` and `extra` options.
    fn build_with(dir: &Path, initrd: &Path, name: &str, cmdline: &str, extra: &[&str]) -> Release {
        let path = dir.join(format!("{name}.efi"));
        build_uki(&path, initrd, cmdline, extra);
        let sha256 = Sha256::digest(std::fs::read(&path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Release {
            boot: measurements(&path),
            path,
            sha256,
        }
    }

    /// How refusals, `ember nodes` and `--to` name it.
    fn short(&self) -> &str {
        &self.sha256[..16]
    }
}

struct Bench {
    server: EmberServer,
    tpm_dir: ScratchDir,
    dir: ScratchDir,
    older: Release,
    newer: Release,
}

/// Two releases of the node's UKI, a strict server (or the first of
/// several replicas) whose rack1 policy allows both (older named first),
/// an enrolled swtpm and an overlay for rack1.
fn bench_on(server: EmberServer) -> Bench {
    let dir = ScratchDir::new("floor");
    let initrd = dir.path().join("initrd.cpio.gz");
    build_initrd(&initrd, &[]);
    let older = Release::build(dir.path(), &initrd, "older");
    let newer = Release::build(dir.path(), &initrd, "newer");
    let tpm_dir = server.enroll_node_with_token("node-a", "rack1", dir.path());
    let run = server
        .set_policy(&[
            "--group",
            "rack1",
            "--pcrs",
            "4",
            "--uki",
            older.path.to_str().unwrap(),
            "--uki",
            newer.path.to_str().unwrap(),
        ])
        .expect_ok("policy set --uki older --uki newer");
    assert!(
        run.stdout.contains(&format!(
            "image epoch 1 ({}), newest in the rollback order",
            older.short()
        )) && run
            .stdout
            .contains(&format!("image epoch 2 ({})", newer.short())),
        "{}",
        run.stdout
    );
    Bench {
        server,
        tpm_dir,
        dir,
        older,
        newer,
    }
}

fn bench() -> Bench {
    bench_on(EmberServer::start_strict(&[]))
}

fn https(server: &EmberServer) -> HttpsClient {
    let url = Url::parse(&server.url()).unwrap();
    HttpsClient::new(&url, &std::fs::read(server.ca_path()).unwrap()).unwrap()
}

fn cfg() -> Url {
    Url::parse("https://boot.test").unwrap()
}

/// The node's Joined report with `cred`, sent to `server`.
fn report_joined(
    server: &EmberServer,
    cred: &Credential,
) -> Result<ember_proto::msg::ReportResponse, ember_proto::Error> {
    client::report(
        &mut https(server),
        &cfg(),
        cred,
        Outcome::Joined,
        None,
        "node is Ready",
        None,
    )
}

/// Asserts `r` failed with the server's refusal `code`.
fn assert_refused_with<T>(r: Result<T, ember_proto::Error>, code: ErrorCode) {
    match r {
        Err(e) if matches!(e.kind(), ember_proto::ErrorKind::Server { code: got, .. } if *got == code) =>
            {}
        Err(e) => panic!("expected {}, got {e}", code.name()),
        Ok(_) => panic!("expected {}, it succeeded", code.name()),
    }
}

/// Ends a boot as the OS does (TPM2_Shutdown), before the swtpm stops: a
/// TPM stopped without it counts a dictionary-attack failure at its next
/// start, and this node reboots more often than swtpm's lockout allows.
fn shut_down(tpm: Swtpm) {
    tpm.tpm2_run("tpm2_shutdown", &[]).expect("tpm2_shutdown");
}

impl Bench {
    /// A reboot into `uki`: a fresh swtpm on the node's state, extended as
    /// the firmware and systemd-stub do booting it. Drop it before the
    /// next boot (one swtpm per state).
    fn boot(&self, uki: &Release) -> Swtpm {
        let tpm = Swtpm::start_tcp(self.tpm_dir.path()).expect("start swtpm");
        eventlog::extend(&tpm, &uki.boot);
        tpm
    }

    /// Boots `uki` and runs the node's flow (`ember attest`) against
    /// `server`, reporting `report` (joined, failed) afterwards if given;
    /// returns the run and the folder the overlay went to.
    fn attest_at(
        &self,
        server: &EmberServer,
        uki: &Release,
        name: &str,
        report: Option<&str>,
    ) -> (Run, PathBuf) {
        let tpm = self.boot(uki);
        let log_path = self.dir.path().join(format!("{name}.log"));
        std::fs::write(&log_path, eventlog::write(&uki.boot)).unwrap();
        let into = self.dir.path().join(format!("{name}-root"));
        let mut args = vec![
            "--into",
            into.to_str().unwrap(),
            "--event-log",
            log_path.to_str().unwrap(),
        ];
        if let Some(r) = report {
            args.extend(["--report", r]);
        }
        let run = server.attest(&tpm.spec(), &args);
        shut_down(tpm);
        (run, into)
    }

    fn attest(&self, uki: &Release, name: &str, report: Option<&str>) -> (Run, PathBuf) {
        self.attest_at(&self.server, uki, name, report)
    }

    /// Boots `uki`, attests and reports Joined: the node blesses it.
    fn bless(&self, uki: &Release, name: &str) {
        let (run, into) = self.attest(uki, name, Some("joined"));
        assert!(run.ok, "{name}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("reported Joined"), "{}", run.stdout);
        assert!(into.join("etc/token").exists());
    }

    /// Boots `uki` and attests with the protocol client, keeping the
    /// credential (nothing reported).
    fn attest_raw(
        &self,
        server: &EmberServer,
        uki: &Release,
    ) -> Result<Credential, ember_proto::Error> {
        let tpm = self.boot(uki);
        let mut t = Tpm::new(SocketTransport::connect_tcp(&tpm.addr()).unwrap());
        let mut dev = TpmAttestor::new(&mut t);
        let cred = client::attest(
            &mut dev,
            &mut https(server),
            &cfg(),
            &eventlog::write(&uki.boot),
        );
        dev.close().unwrap();
        drop(t);
        shut_down(tpm);
        cred
    }

    /// Asserts `uki` attests and gets the overlay (without reporting).
    fn assert_attests(&self, uki: &Release, name: &str) {
        let (run, into) = self.attest(uki, name, None);
        assert!(run.ok, "{name}: {}", run.stderr);
        assert_eq!(
            std::fs::read_to_string(into.join("etc/token")).unwrap(),
            "cluster-secret\n"
        );
    }

    /// Asserts `ember nodes` shows the node's floor at `uki`, epoch `epoch`.
    fn assert_floor(&self, uki: &Release, epoch: u32) {
        let nodes = self.server.nodes();
        assert!(
            nodes.contains(&format!("{epoch} ({})", uki.short())),
            "ember nodes shows no floor at {epoch}:\n{nodes}"
        );
    }

    /// Asserts booting the older UKI is refused as a rollback below the
    /// newer one's floor: the code, no overlay, and the server's log and
    /// `ember nodes` naming the image, the floor and the command.
    fn assert_older_refused(&self, server: &EmberServer, name: &str) {
        let (run, into) = self.attest_at(server, &self.older, name, Some("joined"));
        assert!(!run.ok, "the older UKI attested:\n{}", run.stdout);
        assert!(run.stderr.contains("boot-image-rollback"), "{}", run.stderr);
        assert!(!into.exists(), "the refused node got an overlay");
        let said = format!(
            "this boot's UKI {} (image epoch 1) is older than node node-a's rollback floor, image epoch 2 ({}), which it blessed",
            self.older.short(),
            self.newer.short()
        );
        let command = format!(
            "`ember nodes allow-rollback --node node-a --to {}`",
            self.older.short()
        );
        // The node's own log (ember attest prints what the node prints).
        assert!(run.stderr.contains(&said), "{}", run.stderr);
        assert!(run.stderr.contains(&command), "{}", run.stderr);
        assert!(
            server.wait_log("step=finish node=node-a outcome=boot-image-rollback status=403"),
            "{}",
            server.log()
        );
        let log = server.log();
        assert!(log.contains(&said) && log.contains(&command), "{log}");
        let nodes = server.nodes();
        assert!(nodes.contains(&said) && nodes.contains(&command), "{nodes}");
        self.assert_floor(&self.newer, 2);
    }
}

#[test]
fn an_older_genuine_uki_is_refused_once_the_node_blessed_a_newer_one() {
    let b = bench();
    b.bless(&b.older, "older-1");
    b.bless(&b.newer, "newer-1");
    b.assert_older_refused(&b.server, "older-2");
    // Refused again, however often it tries; the newer one still attests.
    b.assert_older_refused(&b.server, "older-3");
    b.assert_attests(&b.newer, "newer-2");
    // The refusal released nothing: no credential, so no report either.
    assert_refused_with(
        b.attest_raw(&b.server, &b.older),
        ErrorCode::BootImageRollback,
    );
}

#[test]
fn a_node_that_blessed_only_the_older_uki_upgrades_to_the_newer_one() {
    let b = bench();
    b.bless(&b.older, "older");
    b.assert_attests(&b.newer, "newer");
    b.assert_floor(&b.older, 1);
}

#[test]
fn a_newer_uki_that_never_reported_joined_leaves_the_older_one_bootable() {
    let b = bench();
    b.bless(&b.older, "older-1");
    // The upgrade attests but never reaches Ready (no report), then fails
    // outright (a Failed report): the node falls back to the older UKI.
    let (run, _) = b.attest(&b.newer, "newer-silent", None);
    assert!(run.ok, "{}", run.stderr);
    let (run, _) = b.attest(&b.newer, "newer-failed", Some("failed"));
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.contains("reported Failed"), "{}", run.stdout);
    b.assert_attests(&b.older, "older-2");
    b.assert_floor(&b.older, 1);
}

#[test]
fn forged_or_expired_reports_do_not_raise_the_floor() {
    let b = bench_on(EmberServer::start_strict(&["--credential-ttl", "4s"]));
    b.bless(&b.older, "older-1");
    // A Joined under a bearer the server never issued.
    let forged = encode(&ReportRequest {
        version: PROTOCOL_VERSION,
        outcome: Outcome::Joined,
        overlay_version: None,
        reason: "node is Ready".into(),
    });
    let r = https(&b.server)
        .post(msg::path::REPORT, Some(&"ab".repeat(32)), &forged)
        .unwrap();
    assert_eq!(r.status, 401);
    // The newer UKI attests; its Joined arrives after the credential expired.
    let cred = b.attest_raw(&b.server, &b.newer).expect("newer attests");
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_refused_with(
        report_joined(&b.server, &cred),
        ErrorCode::CredentialExpired,
    );
    // Neither moved the floor: the older UKI still attests.
    b.assert_attests(&b.older, "older-2");
    b.assert_floor(&b.older, 1);
}

#[test]
fn a_dropped_joined_report_is_retried_and_the_floor_still_rises() {
    let b = bench();
    b.bless(&b.older, "older-1");
    // An attacker on the path lets Start (1) and Finish (2) through and
    // drops the Joined report (3) of the newer UKI's boot: the request
    // reaches no server and no answer comes back.
    let proxy = DropProxy::start(b.server.addr(), &[3]);
    let tpm = b.boot(&b.newer);
    let log = b.dir.path().join("newer-dropped.log");
    std::fs::write(&log, eventlog::write(&b.newer.boot)).unwrap();
    let run = b.server.attest_via(
        &proxy.url(),
        &tpm.spec(),
        &[
            "--no-overlay",
            "--event-log",
            log.to_str().unwrap(),
            "--report",
            "joined",
        ],
    );
    shut_down(tpm);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("report attempt 1 of 5 failed"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("reported Joined"), "{}", run.stdout);
    assert_eq!(
        proxy.connections(),
        4,
        "start, finish, the dropped report, its retry"
    );
    // The retry arrived: the floor rose, and the older UKI is refused.
    b.assert_floor(&b.newer, 2);
    b.assert_older_refused(&b.server, "older-2");
}

#[test]
fn a_report_claiming_another_overlay_version_is_refused_and_records_nothing() {
    let b = bench();
    b.bless(&b.older, "older-1");
    let cred = b.attest_raw(&b.server, &b.newer).expect("newer attests");
    let granted = cred
        .open_grant(&b.server.manifest_key())
        .expect("grant")
        .manifest
        .version_id;
    for claimed in [granted + 1, 0] {
        let r = client::report(
            &mut https(&b.server),
            &cfg(),
            &cred,
            Outcome::Joined,
            Some(claimed),
            "node is Ready",
            None,
        );
        match &r {
            Err(e) => assert!(
                e.to_string().contains(&format!(
                    "the report claims overlay {claimed}, but this credential's session was granted overlay {granted}"
                )),
                "{e}"
            ),
            Ok(_) => panic!("a report claiming overlay {claimed} was accepted"),
        }
        assert_refused_with(r, ErrorCode::ReportMismatch);
    }
    // Nothing moved: the older UKI still attests, the floor is the older's.
    b.assert_attests(&b.older, "older-2");
    b.assert_floor(&b.older, 1);
    // The refused reports left the credential unused: the true one counts.
    let r = client::report(
        &mut https(&b.server),
        &cfg(),
        &cred,
        Outcome::Joined,
        Some(granted),
        "node is Ready",
        None,
    )
    .expect("the genuine report");
    assert_eq!(r.last_known_good, Some(granted));
    b.assert_floor(&b.newer, 2);
}

/// Two UKIs with the same sections on two builds of the stub: PCR 11
/// (the sections) is the same, the Authenticode digest the firmware
/// extends into PCR 4 is not. Without a quoted PCR 4 the server cannot
/// tell which one booted and assumes neither (the floor does not move on
/// a guess); with PCR 4 quoted each is named by its own extend, and the
/// older one is refused once the newer one was blessed.
#[test]
fn two_ukis_differing_only_in_the_stub_are_never_confused_for_the_floor() {
    let server = EmberServer::start_strict(&[]);
    let dir = ScratchDir::new("stub-floor");
    let initrd = dir.path().join("initrd.cpio.gz");
    build_initrd(&initrd, &[]);
    // Another build of the stub: its COFF TimeDateStamp differs.
    let mut stub = std::fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub").expect("stub");
    let pe = u32::from_le_bytes(stub[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(&stub[pe..pe + 4], b"PE\0\0");
    stub[pe + 8] ^= 0xff;
    let other_stub = dir.path().join("other.stub");
    std::fs::write(&other_stub, &stub).unwrap();
    let cmdline = format!("{CMDLINE} ember.release=same");
    let older = Release::build_with(dir.path(), &initrd, "older", &cmdline, &[]);
    let newer = Release::build_with(
        dir.path(),
        &initrd,
        "newer",
        &cmdline,
        &["--stub", other_stub.to_str().unwrap()],
    );
    let pcr = |r: &Release, n: u32| -> Vec<Vec<u8>> {
        r.boot
            .iter()
            .filter(|e| e.pcr == n)
            .map(|e| e.digest.to_vec())
            .collect()
    };
    assert_ne!(older.sha256, newer.sha256);
    assert_eq!(
        pcr(&older, 11),
        pcr(&newer, 11),
        "the stub is outside PCR 11"
    );
    assert_ne!(pcr(&older, 4), pcr(&newer, 4));
    let tpm_dir = server.enroll_node_with_token("node-a", "rack1", dir.path());
    let b = Bench {
        server,
        tpm_dir,
        dir,
        older,
        newer,
    };
    let policy = |pcr4: bool| {
        let mut args = vec!["--group", "rack1"];
        if pcr4 {
            args.extend(["--pcrs", "4"]);
        }
        args.extend(["--uki", b.older.path.to_str().unwrap()]);
        args.extend(["--uki", b.newer.path.to_str().unwrap()]);
        b.server
            .set_policy(&args)
            .expect_ok("policy set --uki older --uki newer");
    };

    // PCR 11 alone: both fit, neither is assumed, the floor stays unset.
    policy(false);
    b.bless(&b.newer, "newer-pcr11");
    assert!(
        b.server.wait_log("is that of 2 stored UKIs"),
        "{}",
        b.server.log()
    );
    let nodes = b.server.nodes();
    assert!(
        !nodes.contains(b.newer.short()) && !nodes.contains(b.older.short()),
        "a floor was raised on a guess:\n{nodes}"
    );

    // PCR 4 quoted: each is named by its own extend.
    policy(true);
    b.bless(&b.newer, "newer-pcr4");
    b.assert_floor(&b.newer, 2);
    let (run, _) = b.attest(&b.older, "older-pcr4", Some("joined"));
    assert!(!run.ok, "the older UKI attested:\n{}", run.stdout);
    assert!(run.stderr.contains("boot-image-rollback"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "this boot's UKI {} (image epoch 1) is older than node node-a's rollback floor, image epoch 2 ({})",
            b.older.short(),
            b.newer.short()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_late_joined_for_an_older_boot_does_not_lower_the_floor() {
    let b = bench();
    // An older boot attests and keeps its credential unreported...
    let old = b.attest_raw(&b.server, &b.older).expect("older attests");
    // ...the newer one is blessed...
    b.bless(&b.newer, "newer");
    // ...then the older boot's Joined arrives: accepted as a report, but
    // a floor only rises.
    report_joined(&b.server, &old).expect("a valid credential reports");
    // And the same report again is refused (one report per credential).
    assert_refused_with(report_joined(&b.server, &old), ErrorCode::SessionReused);
    b.assert_older_refused(&b.server, "older-after");
}

#[test]
fn the_operator_lowers_the_floor_on_purpose_and_the_older_uki_attests_again() {
    let b = bench();
    b.bless(&b.older, "older-1");
    b.bless(&b.newer, "newer-1");
    b.assert_older_refused(&b.server, "older-2");
    let run = b
        .server
        .ember(&[
            "nodes",
            "allow-rollback",
            "--node",
            "node-a",
            "--to",
            b.older.short(),
        ])
        .expect_ok("allow-rollback");
    assert!(
        run.stdout.contains(&format!(
            "node-a: rollback floor lowered from image epoch 2 to image epoch 1 ({})",
            b.older.short()
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("changed by uid "), "{}", run.stdout);
    // The rolled-back fleet boots the older release, blessing it again.
    b.bless(&b.older, "older-3");
    b.assert_floor(&b.older, 1);
    // The newer release is still an upgrade; once blessed, the floor holds again.
    b.bless(&b.newer, "newer-2");
    b.assert_older_refused(&b.server, "older-4");
    // Cleared for the whole group: any UKI the policy allows attests.
    let run = b
        .server
        .ember(&["nodes", "allow-rollback", "--group", "rack1"])
        .expect_ok("allow-rollback --group");
    assert!(
        run.stdout
            .contains("node-a: rollback floor lowered from image epoch 2 to none"),
        "{}",
        run.stdout
    );
    b.assert_attests(&b.older, "older-5");
    // Every move is kept: the blessings and who lowered the floor.
    let log = b
        .server
        .ember(&["nodes", "floor-log", "--node", "node-a"])
        .expect_ok("floor-log")
        .stdout;
    let moves: Vec<&str> = log.lines().collect();
    let expected = [
        "rollback floor none -> image epoch 1 (blessed)",
        "rollback floor image epoch 1 -> image epoch 2 (blessed)",
        "rollback floor image epoch 2 -> image epoch 1 (allow-rollback by uid ",
        "rollback floor image epoch 1 -> image epoch 2 (blessed)",
        "rollback floor image epoch 2 -> none (allow-rollback by uid ",
    ];
    assert_eq!(moves.len(), expected.len(), "{log}");
    for (line, want) in moves.iter().zip(expected) {
        assert!(
            line.contains(&format!("node-a: {want}")),
            "{line:?} lacks {want:?}:\n{log}"
        );
    }
    // A prefix naming no ordered UKI is refused by name.
    let run = b.server.ember(&[
        "nodes",
        "allow-rollback",
        "--all",
        "--to",
        "0123456789abcdef",
    ]);
    assert!(
        !run.ok && run.stderr.contains("has an image epoch"),
        "{}",
        run.stderr
    );
}

#[test]
fn replicas_on_one_postgresql_agree_on_the_floor() {
    let pg = Postgres::start();
    let shared = ScratchDir::new("floor-state");
    let state = shared.path().join("state");
    let a = EmberServer::start_replica(&pg.url(), &state, false, &[]);
    let second = EmberServer::start_replica(&pg.url(), &state, false, &[]);
    let b = bench_on(a);
    // Two boots attest with no report yet; their Joined reports then race
    // on the two replicas: the floor ends at the newer one either way.
    let older = b.attest_raw(&b.server, &b.older).expect("older attests");
    let newer = b.attest_raw(&second, &b.newer).expect("newer attests");
    std::thread::scope(|s| {
        for (server, cred) in [(&b.server, &older), (&second, &newer)] {
            s.spawn(move || report_joined(server, cred).expect("report"));
        }
    });
    assert_eq!(
        pg.psql("SELECT rollback_floor FROM nodes WHERE name = 'node-a'"),
        "2"
    );
    // Blessed through one replica, refused by the other.
    b.assert_older_refused(&second, "older-at-second");
    b.assert_older_refused(&b.server, "older-at-first");
}

#[test]
fn postgres_migration_5_keeps_the_nodes_of_a_version_4_database() {
    let pg = Postgres::start();
    let shared = ScratchDir::new("floor-migrate");
    let server = EmberServer::start_replica(&pg.url(), &shared.path().join("state"), false, &[]);
    // The database as the previous release left it: schema version 4 (no
    // floors, no image order, nor what migrations 6 to 9 added: boot
    // phases, operators, rollouts, refusal explanations, image SBOMs), with
    // an enrolled node and a finished session.
    pg.psql(
        "DROP TABLE image_packages; DROP TABLE image_sboms; DROP INDEX boot_reports_attested;
         DROP TABLE refusal_explanations; ALTER TABLE boot_reports DROP COLUMN fix;
         DROP TABLE reboot_locks; DROP TABLE rollout_events; DROP TABLE rollout_nodes; DROP TABLE rollouts;
         DROP TABLE boot_phases; DROP TABLE operators;
         ALTER TABLE boot_reports DROP COLUMN boot_image, DROP COLUMN timeline_version,
             DROP COLUMN overlay_sealed_bytes, DROP COLUMN overlay_plain_bytes, DROP COLUMN overlay_receive_ms,
             DROP COLUMN overlay_open_ms, DROP COLUMN overlay_unpack_ms, DROP COLUMN overlay_write_ms;
         DROP TABLE floor_changes; DROP TABLE boot_images; DROP TABLE image_epoch;
         ALTER TABLE sessions DROP COLUMN boot_image; ALTER TABLE nodes DROP COLUMN rollback_floor;
         UPDATE ember_schema SET version = 4;
         INSERT INTO nodes(id, ek_hash, name, group_name, enrolled_at, enrolled_by)
             VALUES (7, '\\xaa', 'old-node', 'default', 0, 'test');
         INSERT INTO sessions(id, node_id, ek_hash, peer, secret, nonce, ak_public, transcript,
                              hash_alg, mask, created_at, expires_at, state)
             VALUES ('\\x01', 7, '\\xaa', '', '\\x00', '\\x00', '\\x00', '\\x00', 11, 1, 0, 99, 'finished')",
    );
    // The next admin command migrates it.
    let nodes = server.nodes();
    assert!(nodes.contains("old-node"), "{nodes}");
    // Migrations 5 to 9 all ran.
    assert_eq!(pg.psql("SELECT version FROM ember_schema"), "9");
    assert_eq!(
        pg.psql("SELECT rollback_floor IS NULL FROM nodes WHERE name = 'old-node'"),
        "t"
    );
    assert_eq!(
        pg.psql("SELECT boot_image IS NULL FROM sessions WHERE node_id = 7"),
        "t"
    );
    assert_eq!(pg.psql("SELECT epoch FROM image_epoch"), "0");
}
