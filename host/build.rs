//! Generates the gRPC service of the Open Inference Protocol
//! (`proto/inference.proto`) with tonic, compiling the proto with protox
//! (pure Rust, so building needs no `protoc`). The encoded descriptor set is
//! kept for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("inference_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Raw tensor bytes are sliced out of the received message, not copied.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .compile_fds(descriptors)?;
    Ok(())
}
