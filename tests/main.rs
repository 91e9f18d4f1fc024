//! Integration tests, compiled as one binary.

mod cli; // the built binary: no-argument run, mapped run, bad input
mod clusters; // calibration, planted-cluster recall, outreach by construction
mod common; // helpers: write logs, read outputs
mod golden; // sample-data against tests/golden/
mod oracle; // the engine against brute force on randomized logs
mod servicenow; // the real service-desk log against a plain reference
