//! The operators' console (`ember serve --console-listen`) over HTTPS as
//! an operator's browser meets it, minus the browser: host-swtpm nodes
//! attest and report (one with its boot's phase table, one refused for a
//! PCR mismatch, one whose reason is markup and bidi/control characters),
//! one that blessed the newer of two UKIs, so it has a rollback floor),
//! then an operator's client certificate opens the fleet and node pages,
//! and requests without one (or with a revoked one, or a node's bearer
//! credential, or a missing or forged CSRF token) are refused. The
//! refused node's page shows expected against received and the command
//! that fixes it, and running that command lets the node attest.

use std::path::Path;

use ember_tests::console::Client;
use ember_tests::eventlog::{self, measurements, LogEvent};
use ember_tests::qemu::build_uki;
use ember_tests::server::EmberServer;
use ember_tests::swtpm::Swtpm;
use ember_tests::webdriver::{nss_db, Browser};
use ember_tests::ScratchDir;

/// A boot's serial log as the init writes it (the lines `ember timeline`
/// and `ember attest --timeline-from` read).
fn serial_log(dir: &Path, failed_phase: Option<&str>) -> std::path::PathBuf {
    let mut log = String::from("[    2.214000] Run /init as init process\n");
    let mut at = 2230;
    for (name, took) in [
        ("rootfs", 11),
        ("mounts", 3),
        ("cmdline", 1),
        ("modules", 180),
        ("measure", 95),
        ("dhcp", 140),
        ("attest", 420),
        ("overlay", 3100),
        ("runtime", 60),
        ("ready", 2400),
    ] {
        log.push_str(&format!("[ {at}] ember: phase={name} status=start\n"));
        at += took;
        if failed_phase == Some(name) {
            log.push_str(&format!(
                "[ {at}] ember: phase={name} status=failed took={took}ms cpu=2ms reason=boom\n"
            ));
            break;
        }
        if name == "overlay" {
            log.push_str(&format!("[ {at}] ember: metrics: overlay_sealed_bytes=20000 overlay_plain_bytes=55000 overlay_receive_ms=107 overlay_open_ms=1214 overlay_unpack_ms=679 overlay_write_ms=668\n"));
        }
        log.push_str(&format!(
            "[ {at}] ember: phase={name} status=ok took={took}ms cpu={}ms\n",
            took / 3
        ));
    }
    let path = dir.join(format!("serial-{}.log", failed_phase.unwrap_or("ok")));
    std::fs::write(&path, log).unwrap();
    path
}

struct Node {
    tpm: Swtpm,
    _dir: ScratchDir,
}

fn node(server: &EmberServer, name: &str, group: &str) -> Node {
    let dir = ScratchDir::new("console-tpm");
    Swtpm::setup(dir.path()).expect("manufacture swtpm");
    let tpm = Swtpm::start_tcp(dir.path()).expect("start swtpm");
    server.enroll_swtpm(name, group, &tpm).expect_ok("enroll");
    Node { tpm, _dir: dir }
}

/// The `src` of the first timeline picture on a node page.
fn first_timeline(html: &str) -> String {
    let at = html
        .find(r#"class="timeline" src=""#)
        .expect("a timeline picture")
        + 22;
    html[at..].split('"').next().unwrap().to_string()
}

/// The fixture: a server with its console, four host-swtpm nodes that
/// attested and reported, and operator alice's certificate.
struct Fleet {
    server: EmberServer,
    addr: String,
    a: Node,
    b: Node,
    c: Node,
    _d: Node,
    ok_log: std::path::PathBuf,
    certs: ScratchDir,
}

/// Two releases of a UKI (`ember uki build`, the lab's kernel and a stand-in
/// initrd: only their measurements matter here) and what booting each
/// extends. Their SBOMs trace `.linux` to the kernel's .deb, so the
/// console has a package to show.
fn releases(dir: &Path) -> [(std::path::PathBuf, Vec<LogEvent>); 2] {
    let initrd = dir.join("initrd.img");
    std::fs::write(&initrd, b"console test initrd").unwrap();
    let kernel_deb = ember_tests::workspace_root().join(".cache/kernel/linux-image.deb");
    ["older", "newer"].map(|name| {
        let path = dir.join(format!("{name}.efi"));
        build_uki(
            &path,
            &initrd,
            &format!("console=ttyS0 ember.release={name}"),
            &["--sbom-deb", kernel_deb.to_str().unwrap()],
        );
        let boot = measurements(&path);
        (path, boot)
    })
}

/// node-d: its policy allows both releases; it boots the newer one and
/// reports Joined, which raises its rollback floor to the newer one's
/// image epoch (2).
fn blessed_node(server: &EmberServer, dir: &Path) -> Node {
    let [older, newer] = releases(dir);
    let d = node(server, "node-d", "rack1");
    server
        .set_policy(&[
            "--node",
            "node-d",
            "--pcrs",
            "4",
            "--uki",
            older.0.to_str().unwrap(),
            "--uki",
            newer.0.to_str().unwrap(),
        ])
        .expect_ok("node-d's policy allows both releases");
    eventlog::extend(&d.tpm, &newer.1);
    let log = dir.join("newer.log");
    std::fs::write(&log, eventlog::write(&newer.1)).unwrap();
    let run = server.attest(
        &d.tpm.spec(),
        &[
            "--no-overlay",
            "--event-log",
            log.to_str().unwrap(),
            "--report",
            "joined",
        ],
    );
    assert!(run.ok, "node-d blesses the newer UKI: {}", run.stderr);
    let floor = server
        .ember(&["nodes", "floor-log", "--node", "node-d"])
        .expect_ok("floor-log");
    assert!(
        floor.stdout.contains("none -> image epoch 2 (blessed)"),
        "{}",
        floor.stdout
    );
    d
}

fn fleet() -> Fleet {
    let server = EmberServer::start_with(&["--console-listen", "127.0.0.1:0"]);
    let addr = server.console_addr().expect("console address").to_string();
    let logs = server.scratch().to_path_buf();

    // node-a joins and sends its phase table.
    let a = node(&server, "node-a", "rack1");
    let ok_log = serial_log(&logs, None);
    server
        .attest(
            &a.tpm.spec(),
            &[
                "--no-overlay",
                "--report",
                "joined",
                "--reason",
                "node is Ready",
                "--timeline-from",
                ok_log.to_str().unwrap(),
            ],
        )
        .expect_ok("node-a attests and reports");

    // node-b is refused: PCR 7 moved after its first boot was recorded.
    let b = node(&server, "node-b", "rack1");
    server
        .set_policy(&[
            "--pcrs",
            "0,1,2,3,4,5,6,7",
            "--lab-record-first-boot",
            "--node",
            "node-b",
        ])
        .expect_ok("policy");
    server
        .attest(&b.tpm.spec(), &["--no-overlay"])
        .expect_ok("first boot records the PCRs");
    b.tpm
        .tpm2_run(
            "tpm2_pcrextend",
            &["7:sha256=0101010101010101010101010101010101010101010101010101010101010101"],
        )
        .expect("extend PCR 7");
    let refused = server.attest(&b.tpm.spec(), &["--no-overlay"]);
    assert!(
        !refused.ok && refused.stderr.contains("pcr-policy-mismatch"),
        "{}",
        refused.stderr
    );

    // node-c's boot failed, and its reason is hostile markup.
    let c = node(&server, "node-c", "rack2");
    let failed_log = serial_log(&logs, Some("overlay"));
    server
        .attest(
            &c.tpm.spec(),
            &[
                "--no-overlay",
                "--report",
                "failed",
                "--reason",
                HOSTILE,
                "--timeline-from",
                failed_log.to_str().unwrap(),
            ],
        )
        .expect_ok("node-c reports");

    let d = blessed_node(&server, &logs);

    let certs = ScratchDir::new("console-operator");
    let out = certs.path().to_str().unwrap();
    server
        .ember(&["admin", "operator", "issue", "alice", "--out", out])
        .expect_ok("issue alice");
    Fleet {
        server,
        addr,
        a,
        b,
        c,
        _d: d,
        ok_log,
        certs,
    }
}

const HOSTILE: &str = "<script>alert(1)</script>\u{202e}gnp.exe\u{7}";

#[test]
fn operators_see_fleet_timelines_and_refusals_and_nothing_opens_without_a_certificate() {
    let f = fleet();
    let (server, addr, a, certs, ok_log) = (&f.server, &f.addr, &f.a, &f.certs, &f.ok_log);
    let alice = Client::new(
        addr,
        &server.ca_path(),
        Some((
            &certs.path().join("alice.pem"),
            &certs.path().join("alice.key"),
        )),
    );

    // Fleet: every node, filters, the CSP.
    let fleet = alice.get("/fleet");
    assert_eq!(fleet.status, 200, "{}", fleet.body);
    let csp = fleet.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    for n in ["node-a", "node-b", "node-c"] {
        assert!(
            fleet.body.contains(&format!(r#"href="/node/{n}""#)),
            "{n} missing:\n{}",
            fleet.body
        );
    }
    let rack2 = alice.get("/fleet?group=rack2");
    assert!(
        rack2.body.contains("node-c") && !rack2.body.contains("node-a"),
        "{}",
        rack2.body
    );
    let failed = alice.get("/fleet?outcome=failed&sort=name&dir=desc");
    assert!(failed.body.contains("node-b") && failed.body.contains("node-c"));
    assert!(
        !failed.body.contains(r#"href="/node/node-a""#),
        "{}",
        failed.body
    );
    assert!(
        failed.body.find("node-c") < failed.body.find("node-b"),
        "descending by name"
    );

    // Node: its timeline, drawn by ember-timeline from the reported table.
    let page = alice.get("/node/node-a");
    assert_eq!(page.status, 200);
    let svg = alice.get(&first_timeline(&page.body));
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    for phase in ["rootfs", "dhcp", "attest", "overlay", "ready"] {
        assert!(
            svg.body.contains(&format!(">{phase}<")),
            "{phase} missing:\n{}",
            svg.body
        );
    }
    assert!(
        svg.body.contains("overlay_open_ms") || page.body.contains("open 1214 ms"),
        "{}",
        page.body
    );

    // The refused node's explanation names the PCR, what was expected and
    // received, and the command that allows it.
    let b_page = alice.get("/node/node-b");
    assert!(
        b_page.body.contains("attestation refused") && b_page.body.contains("PCR 7"),
        "{}",
        b_page.body
    );
    let fix = refused_node_fix(&b_page.body);
    let shown = server
        .ember(&["nodes", "show", "--node", "node-b"])
        .expect_ok("ember nodes show");
    for want in [
        "PCR 7 sha256 value",
        "    expected ",
        "    received ",
        &format!("fix (only for a boot you trust): {fix}"),
    ] {
        assert!(shown.stdout.contains(want), "{want}:\n{}", shown.stdout);
    }

    // The hostile reason is inert, and the failed boot's table ends at the
    // phase that failed.
    let c_page = alice.get("/node/node-c");
    assert!(!c_page.body.contains("<script>alert"), "{}", c_page.body);
    assert!(c_page
        .body
        .contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!c_page.body.contains('\u{202e}') && c_page.body.contains("\\u{202e}"));
    assert!(!c_page.body.contains('\u{7}') && c_page.body.contains("\\u{7}"));
    let c_svg = alice.get(&first_timeline(&c_page.body));
    assert!(
        c_svg.body.contains(">overlay<") && !c_svg.body.contains(">runtime<"),
        "{}",
        c_svg.body
    );
    assert!(!c_svg.body.contains("<script>"));

    // Live updates: /live moves when a boot is reported, on any replica
    // (it reads the database).
    let before: i64 = alice.get("/live").body.trim().parse().unwrap();
    server
        .attest(
            &a.tpm.spec(),
            &[
                "--no-overlay",
                "--report",
                "joined",
                "--timeline-from",
                ok_log.to_str().unwrap(),
            ],
        )
        .expect_ok("node-a boots again");
    let after: i64 = alice.get("/live").body.trim().parse().unwrap();
    assert!(after > before, "{before} -> {after}");

    // The other pages answer.
    let time = alice.get("/boot-time?group=rack1");
    assert!(
        time.status == 200 && time.body.contains("overlay"),
        "{}",
        time.body
    );
    assert_eq!(alice.get("/policies").status, 200);

    // Allow rollback: a POST without the operator's token, with a forged
    // one, from another site, or without a client certificate changes
    // nothing.
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let no_token = alice.request("POST", "/node/node-d/allow-rollback", &form, "to=none");
    assert_eq!(no_token.status, 403);
    let forged = alice.request(
        "POST",
        "/node/node-d/allow-rollback",
        &form,
        &format!("csrf={}&to=none", "ab".repeat(32)),
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    let cross = alice.request(
        "POST",
        "/node/node-d/allow-rollback",
        &["Sec-Fetch-Site: cross-site"],
        "csrf=x&to=none",
    );
    assert_eq!(cross.status, 403);
    let anonymous = Client::new(addr, &server.ca_path(), None);
    let token = csrf_token(&alice.get("/node/node-d").body);
    let no_cert = anonymous.request(
        "POST",
        "/node/node-d/allow-rollback",
        &form,
        &format!("csrf={token}&to=none"),
    );
    assert_eq!(no_cert.status, 401);
    let floor = server
        .ember(&["nodes", "floor-log", "--node", "node-d"])
        .expect_ok("floor-log");
    assert!(
        !floor.stdout.contains("allow-rollback"),
        "the floor moved: {}",
        floor.stdout
    );

    // The fix the refused node's page gives, run as printed, lets it attest.
    let args: Vec<&str> = fix.split(' ').skip(1).collect();
    server.ember(&args).expect_ok("the fix command");
    server
        .attest(&f.b.tpm.spec(), &["--no-overlay"])
        .expect_ok("node-b attests once its new PCR 7 is allowed");

    // Without a client certificate: refused, pages and assets alike, and a
    // node's bearer credential does not help.
    for path in ["/fleet", "/node/node-a", "/assets/live.js", "/live"] {
        assert_eq!(anonymous.get(path).status, 401, "{path}");
    }
    let bearer = anonymous.request(
        "GET",
        "/fleet",
        &[&format!("Authorization: Bearer {}", "ab".repeat(32))],
        "",
    );
    assert_eq!(bearer.status, 401);

    // Revoked: refused at once.
    server
        .ember(&["admin", "operator", "revoke", "alice"])
        .expect_ok("revoke");
    assert_eq!(alice.get("/fleet").status, 403);
}

/// The fix command on the refused node-b's page, after checking the page
/// shows PCR 7's expected and received values: the received one is what
/// the command adds.
fn refused_node_fix(html: &str) -> String {
    let cell = |class: &str| {
        let at = html
            .find(&format!(r#"<td class="{class}">"#))
            .unwrap_or_else(|| panic!("no {class} cell:\n{html}"));
        let rest = &html[at + class.len() + 13..];
        rest[..rest.find('<').unwrap()].to_string()
    };
    let expected = cell("mono digest");
    let received = cell("mono digest received");
    assert!(html.contains("PCR 7 sha256 value"), "{html}");
    assert_eq!(expected.len(), 64, "{expected}");
    assert_eq!(received.len(), 64, "{received}");
    assert_ne!(expected, received);
    let at = html.find(r#"<code class="fix">"#).expect("a fix command") + 18;
    let fix = html[at..][..html[at..].find('<').unwrap()].to_string();
    assert!(
        fix.starts_with("ember policy set --node node-b --pcrs 0,1,2,3,4,5,6,7 ")
            && fix.contains(&format!("--value 7={expected}"))
            && fix.ends_with(&format!("--value 7={received}")),
        "{fix}"
    );
    fix
}

/// The CSRF token in a node page's allow-rollback form.
fn csrf_token(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("the allow-rollback form")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// Waits until the page's source satisfies `ok`, up to `secs`.
fn wait_source(b: &Browser, secs: u64, ok: impl Fn(&str) -> bool) -> bool {
    ember_tests::process::wait_until(std::time::Duration::from_secs(secs), || ok(&b.source()))
}

#[test]
fn the_console_in_a_real_browser_filters_shows_timelines_and_refusals_and_updates_live() {
    let f = fleet();
    let out = ember_tests::workspace_root().join("out/console");
    let home = ScratchDir::new("console-browser");
    nss_db(
        home.path(),
        &f.server.ca_path(),
        &f.certs.path().join("alice.pem"),
        &f.certs.path().join("alice.key"),
    );
    let port = f.addr.rsplit(':').next().unwrap();
    let origin = format!("https://localhost:{port}");
    let b = Browser::start(home.path(), &origin, "console");

    // Fleet, then filtered by group through the form.
    b.goto(&format!("{origin}/fleet"));
    assert!(
        wait_source(&b, 10, |s| s.contains("node-c")),
        "{}",
        b.source()
    );
    assert!(b.source().contains("operator alice"));
    b.screenshot(&out.join("fleet.png"));
    b.eval("document.getElementById('group').value = 'rack2'; return null;");
    b.click("form.filters button");
    assert!(
        wait_source(&b, 10, |s| s.contains("1 node;")),
        "{}",
        b.source()
    );
    assert!(b.url().contains("group=rack2"), "{}", b.url());
    assert!(!b.source().contains(r#"href="/node/node-a""#));
    b.screenshot(&out.join("fleet-filtered.png"));

    // Into node-a: its timeline picture is drawn.
    b.goto(&format!("{origin}/fleet"));
    b.click(r#"a[href="/node/node-a"]"#);
    assert!(wait_source(&b, 10, |s| s.contains("Node node-a")));
    let drawn = ember_tests::process::wait_until(std::time::Duration::from_secs(10), || {
        b.eval("const i = document.querySelector('img.timeline'); return i && i.complete ? i.naturalWidth : 0;")
            .as_u64()
            .unwrap_or(0)
            > 1000
    });
    assert!(drawn, "the timeline SVG did not load");
    b.screenshot(&out.join("node.png"));

    // The refused node's explanation: expected against received, and the
    // command that allows it.
    b.goto(&format!("{origin}/node/node-b"));
    let why = b.eval("const e = document.querySelector('.explain'); return e ? e.innerText : '';");
    let why = why.as_str().unwrap_or("");
    assert!(
        why.contains("attestation refused") && why.contains("PCR 7"),
        "{why}"
    );
    let table =
        b.eval("const t = document.querySelector('table.explained'); return t ? t.innerText : '';");
    let table = table.as_str().unwrap_or("");
    assert!(
        table.contains("Expected")
            && table.contains("Received")
            && table.contains("PCR 7 sha256 value"),
        "{table}"
    );
    let fix = b.eval("const c = document.querySelector('code.fix'); return c ? c.innerText : '';");
    let fix = fix.as_str().unwrap_or("");
    assert_eq!(
        fix,
        refused_node_fix(&b.source()),
        "the fix as the browser shows it"
    );
    b.screenshot(&out.join("refused.png"));
    b.set_window(390, 844);
    b.screenshot(&out.join("refused-phone.png"));
    b.set_window(1280, 800);

    // Allow rollback from the browser: the operator picks the older UKI's
    // epoch and clicks; the token in the form is accepted and the page
    // shows the lower floor and who lowered it.
    b.goto(&format!("{origin}/node/node-d"));
    assert!(wait_source(&b, 10, |s| s.contains("Allow rollback to")));
    let floor = "return document.querySelector('.facts').innerText;";
    let before = b.eval(floor);
    assert!(
        before.as_str().is_some_and(|t| t.contains("image epoch 2")),
        "{before}"
    );
    b.eval("document.getElementById('to').value = '1'; return null;");
    b.click("form.action button");
    assert!(
        wait_source(&b, 10, |s| s
            .contains("allow-rollback by console operator alice")),
        "{}",
        b.source()
    );
    let after = b.eval(floor);
    assert!(
        after
            .as_str()
            .is_some_and(|t| t.contains("Rollback floor\nimage epoch 1")
                || t.contains("Rollback floor\timage epoch 1")
                || t.contains("image epoch 1 (")),
        "{after}"
    );
    b.screenshot(&out.join("allow-rollback.png"));

    // What node-d runs, from the UKI its quote identified: the package
    // list on its page, then the fleet's query for the kernel package.
    let summary =
        b.eval("const s = document.querySelector('details.packages summary'); return s ? s.innerText : '';");
    let summary = summary.as_str().unwrap_or("").to_string();
    assert!(summary.contains(" in UKI "), "{summary}");
    b.click("details.packages summary");
    b.eval("document.querySelector('details.packages').scrollIntoView(); return null;");
    let kernel = b.eval(
        "const a = [...document.querySelectorAll('details.packages a')].find(a => a.innerText.startsWith('linux-image-')); \
         return a ? a.innerText : '';",
    );
    let kernel = kernel.as_str().unwrap_or("").to_string();
    assert!(kernel.starts_with("linux-image-"), "{}", b.source());
    b.screenshot(&out.join("node-packages.png"));
    b.goto(&format!("{origin}/packages"));
    b.eval(&format!(
        "document.getElementById('name').value = '{kernel}'; return null;"
    ));
    b.click("form.filters button");
    assert!(
        wait_source(&b, 10, |s| s
            .contains(r#"<a href="/node/node-d">node-d</a>"#)),
        "{}",
        b.source()
    );
    assert!(b.url().contains("name=linux-image-"), "{}", b.url());
    b.screenshot(&out.join("packages.png"));
    b.set_window(390, 844);
    b.screenshot(&out.join("packages-phone.png"));
    b.set_window(1280, 800);
    let log = f
        .server
        .ember(&["nodes", "floor-log", "--node", "node-d"])
        .expect_ok("floor-log");
    assert!(
        log.stdout
            .contains("image epoch 2 -> image epoch 1 (allow-rollback by console operator alice)"),
        "{}",
        log.stdout
    );

    // The hostile reason is text: no script of its own ran or exists.
    b.goto(&format!("{origin}/node/node-c"));
    let scripts = b.eval("return document.scripts.length;");
    assert_eq!(scripts.as_u64(), Some(1), "only /assets/live.js");
    let shown = b.eval("return document.querySelector('.reason').innerText;");
    let shown = shown.as_str().unwrap_or("");
    assert!(
        shown.contains("<script>alert(1)</script>") && shown.contains("\\u{202e}"),
        "{shown}"
    );
    assert!(!shown.contains('\u{202e}'));
    b.screenshot(&out.join("hostile.png"));

    // Live: a boot reported while the fleet page is open appears without
    // a reload (the marker set in the page survives).
    b.goto(&format!("{origin}/fleet?group=rack2"));
    b.eval("window.emberMarker = 42; return null;");
    let c_spec = f.c.tpm.spec();
    f.server
        .attest(
            &c_spec,
            &[
                "--no-overlay",
                "--report",
                "joined",
                "--reason",
                "fixed",
                "--timeline-from",
                f.ok_log.to_str().unwrap(),
            ],
        )
        .expect_ok("node-c boots again");
    let started = std::time::Instant::now();
    let live = ember_tests::process::wait_until(std::time::Duration::from_secs(5), || {
        b.eval("const r = document.querySelector('table.fleet tbody tr'); return r ? r.innerText : '';")
            .as_str()
            .is_some_and(|t| t.contains("joined"))
    });
    assert!(live, "the new boot did not appear: {}", b.source());
    assert_eq!(
        b.eval("return window.emberMarker || 0;").as_u64(),
        Some(42),
        "the page reloaded"
    );
    eprintln!("new boot shown after {:?}", started.elapsed());
    b.screenshot(&out.join("fleet-live.png"));

    // Boot time, and the fleet on a 390 px phone.
    b.goto(&format!("{origin}/boot-time"));
    assert!(wait_source(&b, 10, |s| s.contains("p50")));
    b.screenshot(&out.join("boot-time.png"));
    b.set_window(390, 844);
    b.goto(&format!("{origin}/fleet"));
    b.screenshot(&out.join("fleet-phone.png"));
}
