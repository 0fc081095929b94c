#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| file_source::fuzzing::csv_framer(data));
