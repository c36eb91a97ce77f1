//! Console operators (`operators`): each certificate `ember admin operator
//! issue` made, by the SHA-256 of its DER, until `revoke`. The console
//! opens for a client certificate only while its row is here unrevoked;
//! the row's name is who the operator is ("who" in the floor log).

use super::{now_ms, Error, Result, Row, Sql};
use crate::params;

/// An operator as the console and `ember admin operator list` see one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub cert_sha256: [u8; 32],
    pub issued_at: i64,
    pub issued_by: String,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "name, cert_sha256, issued_at, issued_by, revoked_at";

impl Operator {
    fn from_row(r: &Row) -> Result<Operator> {
        Ok(Operator {
            name: r.get("name")?,
            cert_sha256: r.get("cert_sha256")?,
            issued_at: r.get("issued_at")?,
            issued_by: r.get("issued_by")?,
            revoked_at: r.get("revoked_at")?,
        })
    }
}

/// Records a newly issued certificate; a name is issued once (revoke it
/// and pick another name to replace it, so the floor log stays unambiguous).
pub fn insert(db: &mut dyn Sql, name: &str, cert_sha256: &[u8; 32], by: &str) -> Result<()> {
    if by_name(db, name)?.is_some() {
        return Err(Error::Conflict(format!(
            "an operator named {name:?} was already issued"
        )));
    }
    db.exec(
        "INSERT INTO operators(name, cert_sha256, issued_at, issued_by) VALUES ($1, $2, $3, $4)",
        params![name, &cert_sha256[..], now_ms(), by],
    )?;
    Ok(())
}

pub fn by_name(db: &mut dyn Sql, name: &str) -> Result<Option<Operator>> {
    db.row(
        &format!("SELECT {COLUMNS} FROM operators WHERE name = $1"),
        params![name],
    )?
    .as_ref()
    .map(Operator::from_row)
    .transpose()
}

/// The unrevoked operator whose certificate has this SHA-256.
pub fn active_by_cert(db: &mut dyn Sql, cert_sha256: &[u8; 32]) -> Result<Option<Operator>> {
    db.row(
        &format!("SELECT {COLUMNS} FROM operators WHERE cert_sha256 = $1 AND revoked_at IS NULL"),
        params![&cert_sha256[..]],
    )?
    .as_ref()
    .map(Operator::from_row)
    .transpose()
}

/// Revokes the operator's certificate; false when there is no such
/// unrevoked operator.
pub fn revoke(db: &mut dyn Sql, name: &str) -> Result<bool> {
    Ok(db.exec(
        "UPDATE operators SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        params![name, now_ms()],
    )? == 1)
}

pub fn list(db: &mut dyn Sql) -> Result<Vec<Operator>> {
    db.rows(
        &format!("SELECT {COLUMNS} FROM operators ORDER BY name"),
        &[],
    )?
    .iter()
    .map(Operator::from_row)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open;
    use crate::store::tests::scratch;

    #[test]
    fn an_operator_opens_the_console_until_revoked_and_a_name_is_issued_once() {
        let (_d, s) = scratch();
        let mut db = open(&s, None).unwrap();
        insert(&mut db, "alice", &[1; 32], "root").unwrap();
        assert!(matches!(
            insert(&mut db, "alice", &[2; 32], "root"),
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            active_by_cert(&mut db, &[1; 32]).unwrap().unwrap().name,
            "alice"
        );
        assert!(active_by_cert(&mut db, &[2; 32]).unwrap().is_none());
        assert!(revoke(&mut db, "alice").unwrap());
        assert!(!revoke(&mut db, "alice").unwrap());
        assert!(!revoke(&mut db, "bob").unwrap());
        assert!(active_by_cert(&mut db, &[1; 32]).unwrap().is_none());
        let all = list(&mut db).unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].revoked_at.is_some());
    }
}
