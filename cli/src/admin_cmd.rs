//! `ember admin operator issue|revoke|list`: who may open the console
//! (`ember serve --console-listen`). An operator is a client certificate
//! signed by the state folder's operator CA and recorded in the database;
//! revoking it closes the console to it at once, on every replica.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use ember_server::console::auth;
use ember_server::store::{hex, operators};

use crate::state_args::StateArgs;

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Console operators' client certificates.
    #[command(subcommand)]
    Operator(OperatorCmd),
}

#[derive(Subcommand)]
pub enum OperatorCmd {
    /// Issue a client certificate for a new operator: DIR/NAME.pem (the
    /// certificate), DIR/NAME.key (its key, mode 0600) and the operator
    /// CA. Import both into the browser (e.g. `openssl pkcs12 -export`).
    Issue(IssueArgs),
    /// Revoke an operator's certificate: the console refuses it from now on.
    Revoke(NameArgs),
    /// List operators and whether they are revoked.
    List(ListArgs),
}

#[derive(Args)]
pub struct IssueArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The operator's name: what the floor log records as who.
    name: String,
    /// Folder to write the certificate and key into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    state: StateArgs,
    name: String,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    state: StateArgs,
}

pub fn run(cmd: AdminCmd) -> Result<()> {
    match cmd {
        AdminCmd::Operator(OperatorCmd::Issue(a)) => issue(a),
        AdminCmd::Operator(OperatorCmd::Revoke(a)) => revoke(a),
        AdminCmd::Operator(OperatorCmd::List(a)) => list(a),
    }
}

fn issue(a: IssueArgs) -> Result<()> {
    if a.days == 0 {
        bail!("--days must be at least 1");
    }
    let mut db = a.state.open()?;
    if operators::by_name(&mut db, &a.name)?.is_some() {
        bail!(
            "an operator named {:?} was already issued (revoke it and pick another name)",
            a.name
        );
    }
    let issued = auth::issue(&a.state.dir(), &a.name, a.days)?;
    let by = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "an administrator".into());
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    let cert = a.out.join(format!("{}.pem", a.name));
    let key = a.out.join(format!("{}.key", a.name));
    write_private(&key, &issued.key_pem)?;
    std::fs::write(&cert, &issued.cert_pem).with_context(|| format!("write {}", cert.display()))?;
    let ca = auth::operator_ca(&a.state.dir())?;
    std::fs::copy(&ca, a.out.join("operator-ca.pem"))?;
    // Recorded last: a certificate only opens the console once its files exist.
    operators::insert(&mut db, &a.name, &issued.sha256, &by)?;
    println!(
        "operator {} issued: {} and {}",
        a.name,
        cert.display(),
        key.display()
    );
    println!("certificate SHA-256 {}", hex(&issued.sha256));
    println!(
        "for a browser: openssl pkcs12 -export -in {} -inkey {} -out {}.p12",
        cert.display(),
        key.display(),
        a.name
    );
    Ok(())
}

fn write_private(path: &std::path::Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn revoke(a: NameArgs) -> Result<()> {
    let mut db = a.state.open()?;
    if !operators::revoke(&mut db, &a.name)? {
        bail!("no unrevoked operator named {:?}", a.name);
    }
    println!(
        "operator {} revoked: the console refuses its certificate from now on",
        a.name
    );
    Ok(())
}

fn list(a: ListArgs) -> Result<()> {
    let mut db = a.state.open()?;
    println!(
        "{:<24} {:<16} {:<10} ISSUED BY",
        "NAME", "CERT SHA-256", "STATE"
    );
    for o in operators::list(&mut db)? {
        println!(
            "{:<24} {:<16} {:<10} {}",
            o.name,
            hex(&o.cert_sha256[..8]),
            if o.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
            ember_proto::untrusted::Untrusted(&o.issued_by)
        );
    }
    Ok(())
}
