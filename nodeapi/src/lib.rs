//! What Ember's /init and the node's runtime both read, without std or
//! allocation, so the two can never disagree: the node configuration
//! syntax (/etc/ember/node.conf) and the readiness of a Node object as the
//! Kubernetes API returns it. The init (`init/`) and the test runtime
//! (`standin/`) both depend on it; each gives the keys its own meaning.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod nodeconf;
pub mod nodestatus;
pub mod utc;

use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A node.conf line that is neither blank, a comment nor `key = value`.
    ConfNoEquals {
        line: usize,
    },
    /// A key outside `[a-z0-9_]+`.
    ConfBadKey {
        line: usize,
    },
    /// A key set a second time.
    ConfDuplicate {
        line: usize,
    },
    /// The JSON document ended inside a value.
    JsonEnd,
    JsonUnexpected {
        at: usize,
    },
    JsonTooDeep {
        at: usize,
    },
    JsonEscape {
        at: usize,
    },
    JsonControl {
        at: usize,
    },
    JsonUtf8 {
        at: usize,
    },
    JsonNumber {
        at: usize,
    },
    JsonTrailing {
        at: usize,
    },
    /// Valid JSON, but not an object with `"kind": "Node"` (for example the
    /// API's `Status` for a missing node).
    NotANode,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ConfNoEquals { line } => {
                write!(f, "node.conf line {line}: expected `key = value`")
            }
            Error::ConfBadKey { line } => {
                write!(
                    f,
                    "node.conf line {line}: keys are lowercase letters, digits and '_' (or sysctl.NAME)"
                )
            }
            Error::ConfDuplicate { line } => write!(f, "node.conf line {line}: key set twice"),
            Error::JsonEnd => write!(f, "JSON ends early"),
            Error::JsonUnexpected { at } => write!(f, "JSON: unexpected byte at {at}"),
            Error::JsonTooDeep { at } => write!(f, "JSON: nested too deep at {at}"),
            Error::JsonEscape { at } => write!(f, "JSON: invalid escape at {at}"),
            Error::JsonControl { at } => write!(f, "JSON: control character in string at {at}"),
            Error::JsonUtf8 { at } => write!(f, "JSON: invalid UTF-8 at {at}"),
            Error::JsonNumber { at } => write!(f, "JSON: invalid number at {at}"),
            Error::JsonTrailing { at } => write!(f, "JSON: data after the document at {at}"),
            Error::NotANode => write!(f, "not a Node object"),
        }
    }
}
