//! Model logs as CloudWatch Logs names and searches them: the log group of an endpoint and the
//! log stream of an instance (as SageMaker names them), and the filter patterns of
//! `FilterLogEvents` over unstructured events.
//!
//! **Filter patterns** (what CloudWatch documents for unstructured log events, case-sensitive):
//!
//! - an empty pattern matches every event;
//! - `ERROR Exception`: space-separated terms, each of which must appear in the message;
//! - `"INTERNAL SERVER ERROR"`: a quoted phrase, which must appear as written (inside quotes
//!   `\"` is a quote and `\\` a backslash);
//! - `?ERROR ?WARN`: alternatives, at least one of which must appear. A term after a `?` term
//!   joins its alternative (`?ERROR MainThread ?WARN Deadlock` is "ERROR and MainThread, or WARN
//!   and Deadlock", the form the AWS CDK writes for `anyTermGroup`); terms before the first `?`
//!   are required whatever alternative matches;
//! - `-DEBUG`: an excluded term, which must not appear.
//!
//! A term is matched as a substring of the message (`ERR` matches `ERROR`). JSON patterns
//! (`{ $.level = "error" }`), space-delimited patterns (`[ip, user, ...]`) and regular
//! expressions (`%...%`) are refused with a message saying so, never silently matched.

use thiserror::Error;

/// The prefix of the log group of every endpoint.
pub const GROUP_PREFIX: &str = "/aws/sagemaker/Endpoints/";

/// The log group of an endpoint's instances: `/aws/sagemaker/Endpoints/<endpoint>`.
pub fn group_name(endpoint: &str) -> String {
    format!("{GROUP_PREFIX}{endpoint}")
}

/// The endpoint whose log group `group` is, when it is one (`None` for any other name).
pub fn endpoint_of_group(group: &str) -> Option<&str> {
    group
        .strip_prefix(GROUP_PREFIX)
        .filter(|e| !e.is_empty() && !e.contains('/'))
}

/// The log stream of one instance: `<variant>/<instance id>`, as SageMaker names it.
pub fn stream_name(variant: &str, instance_id: &str) -> String {
    format!("{variant}/{instance_id}")
}

/// How many of a failed instance's last log lines its event and the endpoint's
/// `FailureReason` quote.
pub const QUOTED_LINES: usize = 5;
/// The most characters of one quoted line (longer ones are cut, marked with `…`).
const QUOTED_LINE_CHARS: usize = 160;
/// The most characters of all quoted lines together (older lines go first), so that a
/// `FailureReason` with its quote stays within AWS's 1024 characters whatever the names.
const QUOTED_CHARS: usize = 440;

/// A line in double quotes: `"` and `\` escaped with a backslash, control characters (tabs,
/// carriage returns, escape sequences) as spaces, at most [`QUOTED_LINE_CHARS`] characters of
/// it (then `…`).
fn quote_line(line: &str) -> String {
    let line = line.trim_end();
    let mut out = String::with_capacity(line.len() + 2);
    out.push('"');
    for (i, c) in line.chars().enumerate() {
        if i == QUOTED_LINE_CHARS {
            out.push('…');
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where an instance's log is and what it said last, for the message of its failure:
/// `Last lines of its log stream <stream> in log group <group>: "..." / "..."`, at most
/// [`QUOTED_LINES`] lines, each quoted and bounded, the newest kept.
pub fn quote_tail(endpoint: &str, variant: &str, instance_id: &str, lines: &[String]) -> String {
    let place = format!(
        "log stream {} in log group {}",
        stream_name(variant, instance_id),
        group_name(endpoint)
    );
    let mut quoted: Vec<String> = lines.iter().rev().take(QUOTED_LINES).map(|l| quote_line(l)).collect();
    while quoted.len() > 1 && quoted.iter().map(|q| q.chars().count() + 3).sum::<usize>() > QUOTED_CHARS {
        quoted.pop();
    }
    if quoted.is_empty() {
        return format!("It wrote nothing to its {place}.");
    }
    quoted.reverse();
    format!("Last lines of its {place}: {}", quoted.join(" / "))
}

/// The longest filter pattern AWS takes.
pub const MAX_PATTERN_CHARS: usize = 1024;

/// A filter pattern spillway does not take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct PatternError(pub String);

/// A parsed filter pattern over unstructured log events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterPattern {
    /// Terms that must all appear.
    required: Vec<String>,
    /// Alternatives (each a list of terms that must all appear), at least one of which must
    /// match; none: no alternative is asked for.
    alternatives: Vec<Vec<String>>,
    /// Terms that must not appear.
    excluded: Vec<String>,
}

/// One term of a pattern as written: its prefix and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A plain term or phrase.
    Term(String),
    /// `?term`: starts an alternative.
    Any(String),
    /// `-term`: must not appear.
    Not(String),
}

impl FilterPattern {
    /// Parses a pattern (see the module's documentation).
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        Ok(Self::from_tokens(tokens(pattern)?))
    }

    /// The pattern of a sequence of tokens.
    pub fn from_tokens(tokens: Vec<Token>) -> Self {
        let mut p = Self::default();
        for t in tokens {
            match t {
                Token::Any(s) => p.alternatives.push(vec![s]),
                Token::Term(s) => match p.alternatives.last_mut() {
                    Some(alt) => alt.push(s),
                    None => p.required.push(s),
                },
                Token::Not(s) => p.excluded.push(s),
            }
        }
        p
    }

    /// Whether the pattern matches every event.
    pub fn matches_everything(&self) -> bool {
        self.required.iter().all(String::is_empty) && self.alternatives.is_empty() && self.excluded.is_empty()
    }

    /// Whether an event's message matches.
    pub fn matches(&self, message: &str) -> bool {
        let has = |t: &String| message.contains(t.as_str());
        self.required.iter().all(has)
            && !self.excluded.iter().any(has)
            && (self.alternatives.is_empty() || self.alternatives.iter().any(|alt| alt.iter().all(has)))
    }
}

/// Splits a pattern into its tokens.
pub fn tokens(pattern: &str) -> Result<Vec<Token>, PatternError> {
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(PatternError(format!(
            "filterPattern: longer than {MAX_PATTERN_CHARS} characters"
        )));
    }
    let trimmed = pattern.trim();
    let unsupported = |kind: &str| {
        Err(PatternError(format!(
            "filterPattern {pattern:?}: {kind} are not supported by spillway, which matches terms, \"quoted phrases\", \
             ?alternatives and -exclusions; quote the term to search for it literally"
        )))
    };
    match trimmed.chars().next() {
        Some('{') => return unsupported("JSON filter patterns"),
        Some('[') => return unsupported("space-delimited filter patterns"),
        Some('%') => return unsupported("regular expressions (%...%)"),
        _ => {}
    }
    let mut out = vec![];
    let mut chars = trimmed.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        let prefix = match first {
            '?' | '-' => {
                chars.next();
                Some(first)
            }
            _ => None,
        };
        let term = match chars.peek() {
            Some('"') => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => s.push(c),
                            None => {
                                return Err(PatternError(format!(
                                    "filterPattern {pattern:?}: the quoted phrase is not closed"
                                )));
                            }
                        },
                        Some(c) => s.push(c),
                        None => {
                            return Err(PatternError(format!(
                                "filterPattern {pattern:?}: the quoted phrase is not closed"
                            )));
                        }
                    }
                }
                if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                    return Err(PatternError(format!(
                        "filterPattern {pattern:?}: a quoted phrase must be followed by a space or the end"
                    )));
                }
                s
            }
            Some(c) if !c.is_whitespace() => {
                let mut s = String::new();
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    if c == '"' {
                        return Err(PatternError(format!(
                            "filterPattern {pattern:?}: a term with a quote in it must be quoted as a whole (\"...\")"
                        )));
                    }
                    s.push(c);
                }
                s
            }
            _ => {
                return Err(PatternError(format!(
                    "filterPattern {pattern:?}: {:?} must be followed by a term",
                    prefix.unwrap_or(' ')
                )));
            }
        };
        out.push(match prefix {
            Some('?') => Token::Any(term),
            Some('-') => Token::Not(term),
            _ => Token::Term(term),
        });
    }
    Ok(out)
}

/// A term quoted for a pattern (the inverse of the parser's quoting).
pub fn quote(term: &str) -> String {
    let mut s = String::with_capacity(term.len() + 2);
    s.push('"');
    for c in term.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, message: &str) -> bool {
        FilterPattern::parse(pattern).unwrap().matches(message)
    }

    #[test]
    fn names_are_sagemakers() {
        assert_eq!(group_name("web"), "/aws/sagemaker/Endpoints/web");
        assert_eq!(endpoint_of_group("/aws/sagemaker/Endpoints/web"), Some("web"));
        assert_eq!(endpoint_of_group("/aws/sagemaker/Endpoints/"), None);
        assert_eq!(endpoint_of_group("/aws/sagemaker/Endpoints/a/b"), None);
        assert_eq!(endpoint_of_group("/aws/lambda/web"), None);
        assert_eq!(stream_name("AllTraffic", "i-1"), "AllTraffic/i-1");
    }

    #[test]
    fn failures_quote_the_last_lines_bounded() {
        let lines: Vec<String> = (1..=8).map(|i| format!("line {i} \"quoted\"")).collect();
        let q = quote_tail("web", "AllTraffic", "i-1", &lines);
        assert_eq!(
            q,
            "Last lines of its log stream AllTraffic/i-1 in log group /aws/sagemaker/Endpoints/web: \
             \"line 4 \\\"quoted\\\"\" / \"line 5 \\\"quoted\\\"\" / \"line 6 \\\"quoted\\\"\" / \
             \"line 7 \\\"quoted\\\"\" / \"line 8 \\\"quoted\\\"\""
        );
        assert_eq!(
            quote_tail("web", "v", "i-1", &[]),
            "It wrote nothing to its log stream v/i-1 in log group /aws/sagemaker/Endpoints/web."
        );
        let long: Vec<String> = (0..5).map(|i| format!("{i}{}", "é".repeat(1000))).collect();
        let q = quote_tail("web", "v", "i-1", &long);
        assert!(q.chars().count() < 560, "{}", q.chars().count());
        assert!(q.ends_with("…\""), "the newest line is kept, cut: {q}");
        assert!(q.contains("\"4é"), "{q}");
        assert_eq!(quote_line("a\tb\u{1b}[31mc\r"), "\"a b [31mc\"");
        // The worst case: the longest names and lines that double when escaped.
        let name = "n".repeat(63);
        let worst: Vec<String> = (0..5).map(|_| "\"".repeat(1000)).collect();
        let reason = format!(
            "The primary container for production variant {name} did not pass the ping health check: \
             the container process exited with signal: 9 (SIGKILL) before passing the ping health check \
             (instance i-0123456789abcdef0 of type ml.p4de.24xlarge). {}",
            quote_tail(&name, &name, "i-0123456789abcdef0", &worst)
        );
        assert!(reason.chars().count() <= 1024, "{}", reason.chars().count());
    }

    #[test]
    fn terms_phrases_alternatives_and_exclusions() {
        assert!(m("", "anything"));
        assert!(m("   ", "anything"));
        assert!(m("ERROR", "[ERROR] boom"));
        assert!(!m("ERROR", "[error] boom"), "case-sensitive");
        assert!(m("ERR", "ERROR"), "a term is a substring");
        assert!(m("ERROR boom", "boom: ERROR"), "terms in any order");
        assert!(!m("ERROR boom", "ERROR"));
        assert!(m("\"out of memory\"", "CUDA out of memory (2 GiB)"));
        assert!(!m("\"out of memory\"", "memory out of"));
        assert!(m("?ERROR ?WARN", "WARN: disk"));
        assert!(m("?ERROR ?WARN", "ERROR: disk"));
        assert!(!m("?ERROR ?WARN", "INFO: disk"));
        assert!(m("ERROR -retrying", "ERROR: failed"));
        assert!(!m("ERROR -retrying", "ERROR: failed, retrying"));
        assert!(m("-DEBUG", "INFO x"));
        assert!(!m("-DEBUG", "DEBUG x"));
        // Groups as the CDK writes them.
        let p = "?\"ERROR\" \"MainThread\" ?\"WARN\" \"Deadlock\"";
        assert!(m(p, "ERROR in MainThread"));
        assert!(m(p, "WARN Deadlock found"));
        assert!(!m(p, "ERROR Deadlock"));
        // Required terms before the first alternative apply to every alternative.
        assert!(m("model ?loaded ?ready", "model ready"));
        assert!(!m("model ?loaded ?ready", "weights ready"));
        assert!(m(r#""say \"hi\" \\o/""#, r#"they say "hi" \o/"#));
        assert!(m("\"\"", "x"), "an empty phrase is in every message");
    }

    #[test]
    fn what_is_not_taken_says_why() {
        for (p, why) in [
            ("{ $.level = \"error\" }", "JSON"),
            ("[ip, user]", "space-delimited"),
            ("%ERR.*%", "regular expressions"),
            ("\"open", "not closed"),
            ("\"a\"b", "followed by a space"),
            ("ab\"c", "quoted as a whole"),
            ("?", "followed by a term"),
            ("ERROR -", "followed by a term"),
        ] {
            let e = FilterPattern::parse(p).unwrap_err();
            assert!(e.0.contains(why), "{p}: {e}");
        }
        assert!(FilterPattern::parse(&"a".repeat(1025)).is_err());
        assert!(FilterPattern::parse(&"a".repeat(1024)).is_ok());
    }

    /// The semantics written out a second way, straight from the tokens, for the property test.
    fn reference(tokens: &[(u8, String)], message: &str) -> bool {
        let has = |t: &str| message.contains(t);
        let mut ok_required = true;
        let mut groups: Vec<bool> = vec![];
        for (prefix, term) in tokens {
            match prefix {
                1 => groups.push(has(term)),
                2 if has(term) => return false,
                2 => {}
                _ => match groups.last_mut() {
                    Some(g) => *g = *g && has(term),
                    None => ok_required &= has(term),
                },
            }
        }
        ok_required && (groups.is_empty() || groups.iter().any(|g| *g))
    }

    proptest::proptest! {
        /// Patterns written from terms (quoted or bare) over a small alphabet match exactly
        /// what the reference semantics says, for messages over the same alphabet.
        #[test]
        fn patterns_match_as_the_reference_says(
            tokens in proptest::collection::vec((0u8..3, "[ab\" \\\\]{0,3}", proptest::bool::ANY), 0..6),
            messages in proptest::collection::vec("[ab\" \\\\]{0,8}", 1..8),
        ) {
            let mut pattern = String::new();
            let mut kept = vec![];
            for (prefix, term, bare) in &tokens {
                let bare = *bare && !term.is_empty() && term.chars().all(|c| c == 'a' || c == 'b');
                pattern.push_str(match prefix { 1 => "?", 2 => "-", _ => "" });
                pattern.push_str(&if bare { term.clone() } else { quote(term) });
                pattern.push(' ');
                kept.push((*prefix, term.clone()));
            }
            let parsed = FilterPattern::parse(&pattern).unwrap();
            for msg in &messages {
                proptest::prop_assert_eq!(parsed.matches(msg), reference(&kept, msg), "{:?} on {:?}", pattern, msg);
            }
        }

        /// No input makes the parser panic, and what it takes it takes again from the tokens.
        #[test]
        fn any_pattern_parses_or_is_refused(p in "\\PC{0,40}") {
            if let Ok(t) = tokens(&p) {
                proptest::prop_assert_eq!(FilterPattern::from_tokens(t), FilterPattern::parse(&p).unwrap());
            }
        }
    }
}
