#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ingest_host::fuzzing::plugin_ipc(data));
