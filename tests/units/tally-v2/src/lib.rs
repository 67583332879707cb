//! Test fixture: `tally` version 2, the same source as version 1 built as 2.0.0.

#[path = "../../tally-v1/src/tally.rs"]
mod tally;
