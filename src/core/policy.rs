//! The IAM policy language: parsing identity-based policy documents and evaluating them as AWS does.
//!
//! PLACEHOLDER (branch i13-iam): only what the identity directory needs to compile. The real
//! parser and evaluator (another branch) replaces this whole file; it keeps [`Policy::parse`]
//! and [`PolicyError`] as the module contract says.

/// A parsed identity-based policy document (placeholder: any JSON object parses).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    _document: serde_json::Value,
}

/// Why a policy document was refused: IAM's `MalformedPolicyDocument` message and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column of the fault.
    pub column: usize,
    /// The message, ending with "(line L, column C)".
    pub message: String,
}

impl Policy {
    /// Parses an IAM JSON policy document (placeholder: it must be a JSON object).
    pub fn parse(document: &str) -> Result<Policy, PolicyError> {
        match serde_json::from_str::<serde_json::Value>(document) {
            Ok(v) if v.is_object() => Ok(Policy { _document: v }),
            Ok(_) => Err(PolicyError {
                line: 1,
                column: 1,
                message: "Syntax errors in policy. (line 1, column 1)".into(),
            }),
            Err(e) => Err(PolicyError {
                line: e.line(),
                column: e.column(),
                message: format!("Syntax errors in policy. (line {}, column {})", e.line(), e.column()),
            }),
        }
    }
}
