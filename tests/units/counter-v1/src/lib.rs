//! Test fixture: `counter` version 1.

mod counter;
