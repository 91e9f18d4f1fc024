//! Integration tests, compiled as one binary.

mod bad_input; // the catalogue of bad inputs: each case's exit code, message and what is written
mod cli; // the built binary: no-argument run, mapped run, bad input
mod cluster; // a scheduler and two executors as processes on loopback: same results, an executor killed
mod clusters; // calibration, planted-cluster recall, outreach by construction
mod common; // helpers: write logs, read outputs
mod determinism; // byte-identical tables whatever the threads, buckets or memory limit
mod faults; // kill -9, Ctrl-C, a full disk, a late memory-limit failure, concurrent runs: earlier runs intact
mod golden; // sample-data against tests/golden/
mod limits; // logs at the edges of what the engine sizes: many reasons
mod nightly; // runs as of a date into one folder: windows, the list, kill -9, exit codes
mod oracle; // the engine against brute force on randomized logs
mod pseudonym; // --pseudonymize: no raw id or key in any output, pseudonyms join
mod report; // report.html in headless Chromium: no errors, the headline, charts with data
mod servicenow; // the real service-desk log against a plain reference

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, remembering the largest single block asked for,
/// so that a test can show that a run never asks for one huge block (a
/// table sized by the square of the number of reasons, say).
struct Tracking;

static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// The largest single block allocated so far by any test of this binary.
pub fn largest_allocation() -> usize {
    LARGEST_ALLOCATION.load(Ordering::Relaxed)
}
