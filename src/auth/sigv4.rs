//! AWS Signature Version 4: verifying requests, signing them (the CLI), cached signing keys.
