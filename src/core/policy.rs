//! The IAM policy language: parsing identity-based policy documents and evaluating them as AWS does.
