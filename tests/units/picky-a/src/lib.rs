//! Test fixture: `picky-a`, one of two units competing for `task` signals.

const NAME: &str = "picky-a";
include!("picky.rs");
