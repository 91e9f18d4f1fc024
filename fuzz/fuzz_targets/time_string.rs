//! `parse_time_str` and `parse_as_of` (time columns stored as text,
//! `--as-of`): never panic, in UTC and in a zone with daylight saving; an
//! instant they return formats as RFC 3339 and reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recur::time::{format_utc, parse_as_of, parse_time_str};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for tz in [
        chrono_tz::UTC,
        chrono_tz::Europe::London,
        chrono_tz::America::St_Johns,
    ] {
        if let Some(us) = parse_time_str(text, tz) {
            let shown = format_utc(us);
            if !shown.is_empty() {
                assert_eq!(
                    parse_time_str(&shown, tz),
                    Some(us),
                    "{text:?} shown as {shown:?}"
                );
            }
        }
        let _ = parse_as_of(text, tz);
    }
});
