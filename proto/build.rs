//! Compiles the `.proto` files with `protox` (pure Rust) and `prost-build`, so
//! building Lapwing needs nothing but cargo: no system `protoc`.
//!
//! To add a service (gRPC), append its file to `PROTO_FILES` and hand the same
//! `FileDescriptorSet` to `tonic_prost_build` as well as (or instead of)
//! `prost_build`; the descriptor set is also written to `OUT_DIR` for gRPC
//! reflection.

use std::path::PathBuf;

/// Every `.proto` file of the crate, relative to the include root (`proto/`).
const PROTO_FILES: &[&str] = &[
    "lapwing/v1/common.proto",
    "lapwing/v1/quic.proto",
    "lapwing/v1/bus.proto",
    "lapwing/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=lapwing");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let fds = protox::compile(PROTO_FILES, ["."])?;
    std::fs::write(
        out_dir.join("lapwing_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    let mut config = prost_build::Config::new();
    // Payloads (and every other `bytes` field) decode as `Bytes`: a slice
    // of the received buffer, no copy.
    config.bytes(["."]);
    // Messages as above, plus the gRPC services (`lapwing.v1.Bus`,
    // `lapwing.v1.Admin`): tonic client and server stubs in the same module.
    tonic_prost_build::configure().compile_fds_with_config(fds, config)?;
    Ok(())
}
