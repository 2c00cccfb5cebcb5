//! Authentication and authorization: AWS Signature Version 4 (`sigv4`), the identities keys
//! resolve to (`directory`), and IAM policy evaluation on every operation.

pub mod directory;
pub mod sigv4;
