#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| file_source::fuzzing::jsonl_fast_path(data));
