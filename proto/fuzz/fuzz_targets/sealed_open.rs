//! The sealed-stream opener under corruption: a valid stream of a fixed
//! plaintext is mutated by the input (byte flips, a cut, an odd piece size).
//! Opening must never panic, and must either fail or yield exactly the
//! original plaintext: nothing else may ever authenticate.
#![no_main]
use ember_proto::manifest::{key_commitment, Compression, Envelope, Manifest, Target};
use ember_proto::sealed::{Opener, Sealer, Sink};
use libfuzzer_sys::fuzz_target;

struct Collect(Vec<u8>);
impl Sink for Collect {
    type Error = &'static str;
    fn write(&mut self, p: &[u8]) -> Result<(), Self::Error> {
        self.0.extend_from_slice(p);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

const KEY: [u8; 32] = [0x5A; 32];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let len = u16::from_le_bytes([data[0], data[1]]) as usize % 600;
    let piece = (data[2] as usize % 97) + 1;
    let plain: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
    let mut sealed = Sealer::seal_all(&KEY, 64, &plain).expect("seal");
    let mut mutated = false;
    for op in data[3..].chunks(3) {
        if op.len() < 3 {
            break;
        }
        let pos = u16::from_le_bytes([op[0], op[1]]) as usize;
        if op[2] == 0 {
            let cut = pos % (sealed.len() + 1);
            mutated |= cut != sealed.len();
            sealed.truncate(cut);
        } else if pos < sealed.len() {
            sealed[pos] ^= op[2];
            mutated = true;
        }
    }
    let manifest = Manifest {
        format: ember_proto::manifest::MANIFEST_FORMAT,
        version_id: 1,
        epoch: 1,
        target: Target::Group("fuzz".into()),
        blob_sha256: [0; 32],
        blob_size: 0,
        plain_size: plain.len() as u64,
        chunk_size: 64,
        compression: Compression::None,
        key_commitment: key_commitment(&KEY),
    };
    let envelope = Envelope::new(manifest, KEY).expect("committed key");
    let mut sink = Collect(Vec::new());
    let mut opener = Opener::for_manifest(&envelope);
    let mut ok = true;
    for p in sealed.chunks(piece) {
        if opener.write(p, &mut sink).is_err() {
            ok = false;
            break;
        }
    }
    let ok = ok && opener.finish(&mut sink).is_ok();
    if ok {
        assert_eq!(sink.0, plain, "a corrupted stream opened to other plaintext");
    } else {
        assert!(mutated, "an intact stream was refused");
        assert!(plain.starts_with(&sink.0), "unauthenticated bytes reached the sink");
    }
});
