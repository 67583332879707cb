//! Test fixture: `picky-b`, the same code as `picky-a` under another name.

const NAME: &str = "picky-b";
include!("../../picky-a/src/picky.rs");
