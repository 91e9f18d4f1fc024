//! The stages of a run after ingest, one module each, in the order
//! [`crate::pipeline`] runs them; each module's docs give its input and
//! output.

pub mod first_pass;
pub mod nullcheck;
pub mod rank;
pub mod reports;
pub mod second_pass;
mod spill;
