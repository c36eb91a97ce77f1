//! API responses and node.conf files are untrusted input to the init: the
//! Node readiness scanner and the node.conf parser must refuse or parse any
//! bytes, never panic.
#![no_main]
use ember_nodeapi::nodeconf;
use ember_nodeapi::nodestatus::{node_status, Ready};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = node_status(data) {
        // A Node without a Ready condition reports no reason.
        if s.ready == Ready::Missing {
            assert!(s.reason.is_none() && s.message.is_none());
        }
    }
    if let Ok(text) = core::str::from_utf8(data) {
        for entry in nodeconf::entries(text) {
            let Ok(e) = entry else { break };
            assert!(!e.key.is_empty() && e.line >= 1);
        }
        let _ = nodeconf::lookup(text, "node_name");
    }
});
