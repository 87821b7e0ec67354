//! Config loading and `${…}` interpolation on any text: problems or a snapshot, never a
//! panic, and no file or variable of the host read (the source answers everything).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sira::config::Source;

struct Fixed;

impl Source for Fixed {
    fn env(&self, name: &str) -> Option<String> {
        (name.len() % 2 == 0).then(|| format!("value-of-{name}"))
    }
    fn file(&self, _path: &str) -> std::io::Result<String> {
        Ok("from a file".into())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sira::config::parse(text, None, &Fixed);
});
