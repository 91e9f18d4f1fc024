//! The stages of a run after ingest, one module each, in the order
//! [`crate::pipeline`] runs them; each module's docs give its input and
//! output.

pub mod first_pass;
pub mod nullcheck;
pub mod rank;
pub mod reports;
pub mod second_pass;
pub(crate) mod spill;
pub mod trends;

/// The passes that run beside the run's own over each bucket's annotated
/// contacts, when asked for: the null check and the cluster trends.
#[derive(Default)]
pub(crate) struct Beside {
    pub null_check: Option<nullcheck::NullCheck>,
    pub trends: Option<trends::Trends>,
}
