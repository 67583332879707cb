//! Test fixture: `counter` version 2, the same source as version 1 built as 2.0.0.

#[path = "../../counter-v1/src/counter.rs"]
mod counter;
