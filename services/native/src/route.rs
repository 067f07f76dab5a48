//! Routing as pure logic, the same as the Python ring's (`dslab.ring`): a request's id, the
//! integer it hashes as, its slot, and the replicas to try from that slot.
//!
//! The Python control plane owns the ring. On every change it hands this plane a `Table`: for
//! each slot, the distinct replicas clockwise from it (owner first), and each replica's
//! address. Only the request hash is computed here, so it must equal the Python one bit for
//! bit; `tests/test_native_plane.py` checks it against `dslab.ring` on generated ids.

use std::borrow::Cow;
use std::sync::Arc;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

const MAX_ID_DIGITS: usize = 18; // every such id fits a signed 64-bit integer

/// The request hash H of a hash pair (`dslab.ring.hashes.HASH_PAIRS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestHash {
    Seed,
    Blake2b,
    Fnv1a,
    Linear,
}

impl RequestHash {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "seed" => Some(Self::Seed),
            "blake2b" => Some(Self::Blake2b),
            "fnv1a" => Some(Self::Fnv1a),
            "linear" => Some(Self::Linear),
            _ => None,
        }
    }

    /// `H(n) % slots`, as Python computes it on unbounded integers.
    pub fn slot(self, n: u64, slots: u64) -> u64 {
        match self {
            // n^2 + 2n + 17 modulo `slots` depends only on n modulo `slots`.
            Self::Seed => {
                let (r, m) = ((n % slots) as u128, slots as u128);
                ((r * r + 2 * r + 17) % m) as u64
            }
            Self::Blake2b => blake2b64(format!("r:{n}").as_bytes()) % slots,
            Self::Fnv1a => fnv1a64(format!("r:{n}").as_bytes()) % slots,
            Self::Linear => n % slots,
        }
    }
}

pub fn blake2b64(data: &[u8]) -> u64 {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid BLAKE2b digest size");
    hasher.update(data);
    let mut out = [0u8; 8];
    hasher.finalize_variable(&mut out).expect("the buffer is the digest's size");
    u64::from_be_bytes(out)
}

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in data {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `request_number`: the id's value when it is at most 18 ASCII digits, else the BLAKE2b of
/// its text. The text is the id's bytes read as Latin-1 (as the Python front end decodes
/// them), hashed as UTF-8.
pub fn request_number(id: &[u8]) -> u64 {
    if !id.is_empty() && id.len() <= MAX_ID_DIGITS && id.iter().all(u8::is_ascii_digit) {
        return id.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    }
    blake2b64(&latin1_to_utf8(id))
}

fn latin1_to_utf8(bytes: &[u8]) -> Cow<'_, [u8]> {
    if bytes.is_ascii() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        if b < 0x80 {
            out.push(b);
        } else {
            out.push(0xc0 | (b >> 6));
            out.push(0x80 | (b & 0x3f));
        }
    }
    Cow::Owned(out)
}

/// The client's `X-Request-ID` (when not empty), else the first non-empty `rid=` of the query
/// string; `None`: the caller draws a random one.
pub fn request_id<'a>(header: Option<&'a [u8]>, uri: &'a [u8]) -> Option<&'a [u8]> {
    if let Some(value) = header.filter(|v| !v.is_empty()) {
        return Some(value);
    }
    let query = &uri[uri.iter().position(|&b| b == b'?')? + 1..];
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (key == b"rid" && !value.is_empty()).then_some(value)
    })
}

/// A replica as the control plane names it, and where it listens (`None`: no pool yet).
#[derive(Debug)]
pub struct Replica {
    pub name: Arc<str>,
    pub address: Option<(String, u16)>,
}

/// One version of the ring, never changed once published: the next change is a new table.
#[derive(Debug)]
pub struct Table {
    pub hash: RequestHash,
    pub slots: u64,
    pub walks: Vec<Box<[u16]>>, // slot -> replicas to try (indices into `replicas`)
    pub replicas: Vec<Replica>,
}

impl Table {
    pub fn empty() -> Self {
        Table { hash: RequestHash::Linear, slots: 1, walks: vec![Box::new([])], replicas: vec![] }
    }

    /// The replicas to try for a request id, owner first.
    pub fn walk(&self, request_id: &[u8]) -> &[u16] {
        let slot = self.hash.slot(request_number(request_id), self.slots);
        &self.walks[slot as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_their_value_and_anything_else_hashes() {
        assert_eq!(request_number(b"000123"), 123);
        assert_eq!(request_number(b"999999999999999999"), 999_999_999_999_999_999);
        assert_ne!(request_number(b"1234567890123456789"), 1_234_567_890_123_456_789);
        assert_eq!(request_number(b"abc"), blake2b64(b"abc"));
        assert_eq!(request_number(b"\xe9"), blake2b64("\u{e9}".as_bytes()));
    }

    #[test]
    fn the_seed_hash_is_exact_past_64_bits() {
        let n = u64::MAX;
        let exact = ((n as u128) * (n as u128) % 512 + 2 * (n as u128) % 512 + 17) % 512;
        assert_eq!(RequestHash::Seed.slot(n, 512) as u128, exact);
    }

    #[test]
    fn the_header_wins_then_the_first_non_empty_rid() {
        assert_eq!(request_id(Some(b"7"), b"/home?rid=9"), Some(&b"7"[..]));
        assert_eq!(request_id(Some(b""), b"/home?rid=&rid=9"), Some(&b"9"[..]));
        assert_eq!(request_id(None, b"/home?x=1&rid"), None);
        assert_eq!(request_id(None, b"/home"), None);
    }
}
