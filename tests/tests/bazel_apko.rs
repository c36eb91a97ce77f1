//! apko cannot run on these machines (no apko binary, no Alpine/Wolfi
//! repositories), so the production base image's configuration is checked
//! without it: apko/validate.py checks the YAML's structure and that its
//! packages answer exactly the documented rke2 host requirements
//! (apko/requirements.yaml); the self-test proves it rejects broken configs.

use std::process::Command;

use ember_tests::workspace_root;

#[test]
fn apko_config_meets_the_documented_rke2_host_requirements() {
    let out = Command::new("bash")
        .arg(workspace_root().join("apko/validate_test.sh"))
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid; "), "{stdout}");
    // Every broken variant was refused for the right reason.
    assert_eq!(stdout.matches("ok: ").count(), 7, "{stdout}");
}
