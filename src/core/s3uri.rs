//! S3 URIs (`s3://bucket/key`) as asynchronous inference names its input and output, and the
//! naming rules of buckets and keys: pure parsing, no IO.
//!
//! AWS's own pattern for these members (`InputLocation`, `S3OutputPath`, `S3FailurePath`) is
//! `^(https|s3)://([^/]+)/?(.*)$`; spillway accepts the `s3://` form only, and checks the
//! bucket against S3's naming rules for general purpose buckets (3 to 63 characters of
//! lower-case letters, digits, `.` and `-`, beginning and ending with a letter or digit, no
//! `..`, not an IP address), so a bucket name is always a safe single path segment.

/// The longest object key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// A URI, bucket name or key that breaks a rule; the message names the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct S3UriError(pub String);

/// An object's URI, `s3://bucket/key` with a non-empty key: (bucket, key), both checked.
pub fn parse_object(uri: &str) -> Result<(&str, &str), S3UriError> {
    let (bucket, key) = split(uri)?;
    if key.is_empty() {
        return Err(S3UriError(format!(
            "{uri:?} names no object: expected s3://<bucket>/<key> with a key"
        )));
    }
    check_key(key, false)?;
    Ok((bucket, key))
}

/// A prefix's URI: `s3://bucket`, `s3://bucket/` or `s3://bucket/prefix` (`S3OutputPath`):
/// (bucket, prefix), the prefix possibly empty.
pub fn parse_prefix(uri: &str) -> Result<(&str, &str), S3UriError> {
    let (bucket, key) = split(uri)?;
    check_key(key, true)?;
    Ok((bucket, key))
}

/// The key of `name` under the prefix `prefix`: `prefix/name`, with no doubled `/` where they
/// meet (`out/` and `out` both give `out/name`; the empty prefix gives `name`).
pub fn child_key(prefix: &str, name: &str) -> String {
    let name = name.trim_start_matches('/');
    if prefix.is_empty() {
        name.to_string()
    } else if prefix.ends_with('/') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}/{name}")
    }
}

/// `s3://bucket/rest` → (bucket, rest), the bucket checked.
fn split(uri: &str) -> Result<(&str, &str), S3UriError> {
    let Some(rest) = uri.strip_prefix("s3://") else {
        return Err(S3UriError(format!(
            "{uri:?} is not an S3 URI: expected s3://<bucket>/<key>"
        )));
    };
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    check_bucket_name(bucket).map_err(|S3UriError(m)| S3UriError(format!("{uri:?}: {m}")))?;
    Ok((bucket, key))
}

/// S3's rules for a general purpose bucket's name.
pub fn check_bucket_name(name: &str) -> Result<(), S3UriError> {
    let bad = |rule: &str| Err(S3UriError(format!("The bucket name {name:?} {rule}")));
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("may contain only lower-case letters, digits, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(name.as_bytes()[0]) || !edge(name.as_bytes()[name.len() - 1]) {
        return bad("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    Ok(())
}

/// S3's rules for a key: at most [`MAX_KEY_BYTES`] bytes, not empty unless `allow_empty` (a
/// prefix). S3 accepts any other UTF-8; where a key lands on disk is the embedded store's
/// business (it never becomes a path).
pub fn check_key(key: &str, allow_empty: bool) -> Result<(), S3UriError> {
    if key.is_empty() && !allow_empty {
        return Err(S3UriError("The object key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(S3UriError(format!(
            "The object key is {} bytes long; S3 keys are at most {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn objects_and_prefixes() {
        assert_eq!(
            parse_object("s3://my-bucket/in/a.json").unwrap(),
            ("my-bucket", "in/a.json")
        );
        assert!(parse_object("s3://my-bucket/").is_err());
        assert!(parse_object("s3://my-bucket").is_err());
        assert_eq!(parse_prefix("s3://my-bucket").unwrap(), ("my-bucket", ""));
        assert_eq!(parse_prefix("s3://my-bucket/").unwrap(), ("my-bucket", ""));
        assert_eq!(parse_prefix("s3://my-bucket/out/").unwrap(), ("my-bucket", "out/"));
        for bad in [
            "https://b/k",
            "S3://bkt/k",
            "s3:///k",
            "s3://ab/k",
            "s3://Upper/k",
            "s3://a..b/k",
            "s3://-ab/k",
            "s3://192.168.1.1/k",
            "s3://a_b/k",
        ] {
            let e = parse_object(bad).unwrap_err();
            assert!(e.0.contains(bad), "{bad}: {e}");
        }
        let long = format!("s3://bkt/{}", "k".repeat(MAX_KEY_BYTES + 1));
        assert!(parse_object(&long).unwrap_err().0.contains("1024"));
    }

    #[test]
    fn children_never_double_slashes() {
        assert_eq!(child_key("out", "x.out"), "out/x.out");
        assert_eq!(child_key("out/", "x.out"), "out/x.out");
        assert_eq!(child_key("", "x.out"), "x.out");
        assert_eq!(child_key("", "/x.out"), "x.out");
    }

    proptest! {
        /// Whatever a URI holds, parsing never panics, and an accepted URI prints back as itself.
        #[test]
        fn parse_round_trips(uri in "(s3://)?[a-z0-9.\\-A-Z_]{0,10}(/[a-zA-Z0-9/._ -]{0,20})?") {
            if let Ok((bucket, key)) = parse_prefix(&uri) {
                let printed = format!("s3://{bucket}/{key}");
                prop_assert_eq!(parse_prefix(&printed).unwrap(), (bucket, key));
                if !key.is_empty() {
                    prop_assert_eq!(parse_object(&uri).unwrap(), (bucket, key));
                }
            }
        }

        /// A child is its prefix, one `/`, and the name without leading slashes.
        #[test]
        fn child_joins_with_one_slash(prefix in "[a-z/]{0,8}", name in "/{0,2}[a-z.]{1,8}") {
            let c = child_key(&prefix, &name);
            let bare = name.trim_start_matches('/');
            prop_assert!(c.ends_with(bare));
            prop_assert!(c.starts_with(&prefix));
            let between = &c[prefix.len()..c.len() - bare.len()];
            prop_assert!(between.is_empty() || between == "/");
            prop_assert!(!prefix.is_empty() || between.is_empty());
            prop_assert!(prefix.is_empty() || prefix.ends_with('/') || between == "/");
        }

        /// Bucket names that pass are safe path segments.
        #[test]
        fn accepted_bucket_names_are_single_safe_segments(name in "[a-z0-9.\\-/]{0,70}") {
            if check_bucket_name(&name).is_ok() {
                prop_assert!(!name.contains('/') && name != "." && name != ".." && !name.starts_with('.'));
            }
        }
    }
}
