//! Request ids for invocations: `x-amzn-RequestId` on every answer, in the audit record and in
//! the log lines of the invocation.
//!
//! An id looks like AWS's (a version-4 UUID, lower-case, hyphenated) and is made without a
//! system call: 64 bits chosen at random when the server starts, and 62 bits that are a fixed
//! random permutation of a per-process counter. Two invocations served by one process never
//! share an id (the permutation is a bijection, and the counter would take centuries to wrap),
//! ids of different runs differ in their random half, and consecutive ids do not reveal how
//! many requests the server has answered.

use std::sync::atomic::{AtomicU64, Ordering};

/// The bits of the counter half that are the counter's (the top two are UUID's variant).
const MASK_62: u64 = (1 << 62) - 1;

/// Makes request ids (one per data plane).
#[derive(Debug)]
pub struct RequestIds {
    /// The random half, with the UUID version nibble set.
    high: u64,
    /// Added to the counter before it is permuted.
    offset: u64,
    next: AtomicU64,
}

impl RequestIds {
    /// A generator with a fresh random half.
    pub fn new() -> Self {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        Self::seeded(a, b)
    }

    /// A generator from fixed seeds (tests).
    pub fn seeded(high: u64, offset: u64) -> Self {
        Self {
            // Version 4: the 13th hex digit is `4`.
            high: (high & !0xf000) | 0x4000,
            offset,
            next: AtomicU64::new(0),
        }
    }

    /// The next id.
    pub fn next(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // RFC 4122 variant (`10` in the top bits), then a permutation of the 62-bit counter
        // (xor-shifts and odd multipliers are bijections modulo 2^62).
        let low = (1 << 63) | permute(n.wrapping_add(self.offset) & MASK_62);
        let mut text = [0u8; 36];
        uuid::Uuid::from_u64_pair(self.high, low)
            .hyphenated()
            .encode_lower(&mut text);
        RequestId(text)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// A bijection of `0..2^62` onto itself (splitmix64's finalizer, cut to 62 bits).
fn permute(mut x: u64) -> u64 {
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9) & MASK_62;
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb) & MASK_62;
    x ^ (x >> 31)
}

/// One request id, as text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId([u8; 36]);

impl RequestId {
    /// The id (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a UUID's text is ASCII")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_version_4_uuids_and_distinct() {
        let ids = RequestIds::new();
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let id = ids.next();
            let u = uuid::Uuid::parse_str(id.as_str()).expect("a UUID");
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(u.hyphenated().to_string(), id.as_str(), "lower-case, hyphenated");
            assert!(seen.insert(id), "{id} repeated");
        }
    }

    #[test]
    fn runs_differ_in_their_random_half() {
        let (a, b) = (RequestIds::new(), RequestIds::new());
        assert_ne!(a.next().as_str()[..18], b.next().as_str()[..18]);
    }

    proptest! {
        /// The permutation is injective on 62 bits (so ids of one run never collide), and stays
        /// within them (the variant bits are never touched).
        #[test]
        fn the_permutation_is_injective_within_62_bits(a in 0..=MASK_62, b in 0..=MASK_62) {
            prop_assert!(permute(a) <= MASK_62);
            prop_assert_eq!(permute(a) == permute(b), a == b);
        }
    }

    #[test]
    fn consecutive_ids_do_not_count_upwards() {
        let ids = RequestIds::seeded(1, 0);
        let lows: Vec<u64> = (0..64)
            .map(|_| uuid::Uuid::parse_str(ids.next().as_str()).unwrap().as_u64_pair().1 & MASK_62)
            .collect();
        let rising = lows.windows(2).filter(|w| w[1] > w[0]).count();
        assert!((16..48).contains(&rising), "{rising} of 63 steps rise: {lows:x?}");
    }
}
