//! Test fixture: `tally` version 1.

mod tally;
