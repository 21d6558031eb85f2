#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeserve::fuzz::safetensors(data));
