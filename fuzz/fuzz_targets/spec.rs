//! Any bytes as a pipeline spec: parsing and planning must return a plan or
//! a `SpecError`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seqpipe::spec::{self, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source {
        path: "fuzz.toml".into(),
        text: text.to_string(),
    };
    if let Ok(spec) = spec::parse(source, &[]) {
        let _ = seqpipe::graph::resolve(spec, &seqpipe_stages::registry());
    }
});
