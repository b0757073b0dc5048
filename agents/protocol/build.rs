//! Generates the gRPC messages and services from `proto/` (needs `protoc`, which
//! `ci/setup-host` installs with `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/attestation.proto", "proto/bootstrap.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    Ok(())
}
