//! The config file: TOML text → options → a validated run config. Never
//! panics; whatever is refused is refused with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recur::config::{PipelineConfig, RunOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(options) = RunOptions::parse(text) else {
        return;
    };
    // layering flags over the file goes through the options' JSON form
    let options = RunOptions::default().or(options);
    let _ = PipelineConfig::from_raw(options);
});
