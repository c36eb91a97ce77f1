//! The socket transport against a peer that misbehaves on the wire: short
//! reads, oversized size fields, a closed connection.
#![cfg(feature = "std")]

use ember_tpm::*;
use std::io::{Read, Write};
use std::net::TcpListener;

/// A one-shot TCP peer that reads one command and answers with `reply`,
/// three bytes at a time.
fn peer(reply: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        // Dribble the reply so the transport must reassemble it.
        for piece in reply.chunks(3) {
            let _ = s.write_all(piece);
            let _ = s.flush();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    addr
}

fn get_random_reply(declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 0x01];
    v.extend_from_slice(&declared.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(payload);
    v
}

#[test]
fn whole_response_is_read_across_segments() {
    let addr = peer(get_random_reply(16, &[0, 4, 1, 2, 3, 4]));
    let mut tpm = Tpm::new(SocketTransport::connect_tcp(&addr).unwrap());
    assert_eq!(tpm.get_random(4).unwrap(), [1, 2, 3, 4]);
}

#[test]
fn peer_closing_mid_response_is_a_short_read() {
    let addr = peer(get_random_reply(16, &[0, 4, 1]));
    let mut tpm = Tpm::new(SocketTransport::connect_tcp(&addr).unwrap());
    assert_eq!(
        tpm.get_random(4).unwrap_err(),
        Error::new(ErrorKind::ShortRead {
            received: 13,
            expected: 16
        })
    );
    let addr = peer(vec![0x80, 0x01, 0]);
    let mut tpm = Tpm::new(SocketTransport::connect_tcp(&addr).unwrap());
    assert_eq!(
        tpm.get_random(4).unwrap_err(),
        Error::new(ErrorKind::ShortRead {
            received: 3,
            expected: 10
        })
    );
}

#[test]
fn size_field_beyond_the_buffer_is_refused_without_reading_it() {
    let addr = peer(get_random_reply(1 << 20, &[0, 4, 1, 2, 3, 4]));
    let mut tpm = Tpm::new(SocketTransport::connect_tcp(&addr).unwrap());
    assert_eq!(
        tpm.get_random(4).unwrap_err(),
        Error::new(ErrorKind::ResponseTooLarge {
            declared: 1 << 20,
            limit: MAX_RESPONSE_SIZE
        })
    );
    let addr = peer(get_random_reply(4, &[]));
    let mut tpm = Tpm::new(SocketTransport::connect_tcp(&addr).unwrap());
    assert_eq!(
        tpm.get_random(4).unwrap_err(),
        Error::new(ErrorKind::ResponseSizeMismatch {
            declared: 4,
            received: 10
        })
    );
}

#[test]
fn nv_read_is_chunked_by_nv_buffer_max() {
    // GetCapability(TPM_PT_NV_BUFFER_MAX) = 64, then three NV_Read chunks.
    let mut t = FakeTransport::new();
    let mut caps = vec![0, 0, 0, 0, 6, 0, 0, 0, 1];
    caps.extend_from_slice(&0x12cu32.to_be_bytes());
    caps.extend_from_slice(&64u32.to_be_bytes());
    t.push(&frame(0x8001, &caps));
    for (len, fill) in [(64usize, 1u8), (64, 2), (22, 3)] {
        let mut body = ((2 + len) as u32).to_be_bytes().to_vec();
        body.extend_from_slice(&(len as u16).to_be_bytes());
        body.extend(std::iter::repeat_n(fill, len));
        body.extend_from_slice(&[0, 0, 1, 0, 0]);
        t.push(&frame(0x8002, &body));
    }
    let mut tpm = Tpm::new(t);
    let data = tpm.nv_read(0x01c0_0002, 150).unwrap();
    assert_eq!(data.len(), 150);
    assert_eq!((data[0], data[64], data[149]), (1, 2, 3));
    let cmds = &tpm.transport_mut().commands;
    assert_eq!(cmds.len(), 4);
    // size and offset are the last four bytes of each NV_Read.
    let tail = |c: &Vec<u8>| c[c.len() - 4..].to_vec();
    assert_eq!(tail(&cmds[1]), [0, 64, 0, 0]);
    assert_eq!(tail(&cmds[2]), [0, 64, 0, 64]);
    assert_eq!(tail(&cmds[3]), [0, 22, 0, 128]);
}

fn frame(tag: u16, body: &[u8]) -> Vec<u8> {
    let mut v = tag.to_be_bytes().to_vec();
    v.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(body);
    v
}
