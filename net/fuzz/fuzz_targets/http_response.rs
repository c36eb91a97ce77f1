//! A server's response bytes: head parser and body decoder, fed in two
//! pieces split where the input says.
#![no_main]
use ember_net::http::{head_len, parse_head, BodyDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let Some(len) = head_len(data) else { return };
    let Ok(head) = parse_head(&data[..len]) else { return };
    let body = &data[len..];
    let cut = (split as usize).min(body.len());
    let mut dec = BodyDecoder::new(head.body);
    let mut total = 0usize;
    let mut sink = |d: &[u8]| -> ember_net::Result<()> {
        total += d.len();
        Ok(())
    };
    if let Ok(used) = dec.feed(&body[..cut], &mut sink) {
        assert!(used <= cut);
        if used == cut {
            let _ = dec.feed(&body[cut..], &mut sink);
        }
    }
    assert!(total <= body.len());
    let _ = dec.finish();
});
