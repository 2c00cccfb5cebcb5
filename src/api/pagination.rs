//! `NextToken`s that a client cannot forge: what a list hands out is its position (an offset,
//! or whatever the operation needs to cut the next page) and an HMAC-SHA256 tag over the
//! operation's name and that position, under a key this process drew at random. A token is
//! taken back only by the operation that issued it and only unchanged; anything else is
//! refused, each API with its own error. Tokens do not outlive the process (a restarted server
//! refuses them, and the client starts its listing again).

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The tag is cut to this many bytes (128 bits).
const TAG_BYTES: usize = 16;

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // The OS refused randomness: uuid's own generator is the next best source.
            key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        key
    })
}

fn tag(operation: &str, position: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key()).expect("HMAC takes a key of any length");
    mac.update(operation.as_bytes());
    mac.update(&[0]);
    mac.update(position.as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes[..TAG_BYTES].iter().map(|b| format!("{b:02x}")).collect()
}

/// The token for `position` in `operation`'s listing: `<position>.<tag>`.
pub fn issue(operation: &str, position: &str) -> String {
    format!("{position}.{}", tag(operation, position))
}

/// The position a token of `operation` carries; `None` for a token this process did not issue
/// for that operation (made up, altered, another operation's, an earlier process's).
pub fn open<'t>(operation: &str, token: &'t str) -> Option<&'t str> {
    let (position, given) = token.rsplit_once('.')?;
    let want = tag(operation, position);
    bool::from(want.as_bytes().ct_eq(given.as_bytes())).then_some(position)
}

/// The offset a plain listing's token carries, within a list of `len` items: 0 without a
/// token, `None` for a token [`open`] refuses or an offset past the end.
pub fn offset(operation: &str, token: Option<&str>, len: usize) -> Option<usize> {
    match token {
        None => Some(0),
        Some(t) => open(operation, t)
            .and_then(|p| p.parse::<usize>().ok())
            .filter(|o| *o <= len),
    }
}

/// The page `[start, start + size)` of a list of `len` items, and the token for the rest.
pub fn page(operation: &str, start: usize, size: usize, len: usize) -> (std::ops::Range<usize>, Option<String>) {
    let end = start.saturating_add(size).min(len);
    let next = (end < len).then(|| issue(operation, &end.to_string()));
    (start..end, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_back_only_unchanged_and_to_their_operation() {
        let t = issue("ListModels", "10");
        assert_eq!(open("ListModels", &t), Some("10"));
        assert_eq!(open("ListEndpoints", &t), None, "another operation's token");
        let forged = t.replacen("10", "20", 1);
        assert_eq!(open("ListModels", &forged), None, "an altered position");
        for bogus in [
            "",
            "10",
            "10.",
            ".abc",
            "not-a-token",
            "10.00000000000000000000000000000000",
        ] {
            assert_eq!(open("ListModels", bogus), None, "{bogus:?}");
        }
        assert_eq!(offset("ListModels", None, 3), Some(0));
        assert_eq!(offset("ListModels", Some(&issue("ListModels", "3")), 3), Some(3));
        assert_eq!(offset("ListModels", Some(&issue("ListModels", "4")), 3), None);
        assert_eq!(offset("ListModels", Some(&issue("ListModels", "x")), 3), None);
    }

    #[test]
    fn pages_hand_out_a_token_only_when_more_remains() {
        let (r, next) = page("Op", 0, 10, 25);
        assert_eq!(r, 0..10);
        assert_eq!(offset("Op", next.as_deref(), 25), Some(10));
        let (r, next) = page("Op", 20, 10, 25);
        assert_eq!((r, next), (20..25, None));
        assert_eq!(page("Op", 0, 10, 10).1, None);
    }
}
