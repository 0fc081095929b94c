#![no_main]

libfuzzer_sys::fuzz_target!(
    // The host turns a panic of the Arrow reader into an error (see `batch::guarded`); only
    // a panic outside that guard is a finding.
    init: {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !ingest_host::batch::in_guarded_read() {
                abort(info);
            }
        }));
    },
    |data: &[u8]| ingest_host::fuzzing::plugin_ipc(data)
);
