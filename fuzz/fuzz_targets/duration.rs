//! `parse_duration_us` (every window flag): never panics; what it accepts
//! is positive, within the limit, and reads back the same once formatted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recur::time::{MAX_DURATION_US, format_duration_us, parse_duration_us};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(us) = parse_duration_us(text) {
        assert!((1..=MAX_DURATION_US).contains(&us), "{text:?} gave {us}");
        let shown = format_duration_us(us);
        assert_eq!(
            parse_duration_us(&shown),
            Ok(us),
            "{text:?} shown as {shown:?}"
        );
    }
});
