//! The audit trail: every call recorded durably, as CloudTrail records, chained by hash.
