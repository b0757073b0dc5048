//! Generates the gRPC messages and services from `proto/` (needs `protoc`, which
//! `ci/setup-host` installs with `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let own = ["proto/attestation.proto", "proto/bootstrap.proto"];
    for p in own.iter().chain(&["proto/join.proto"]) {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_protos(&own, &["proto"])?;
    // join.proto reuses attestation.proto's messages: point at the ones made above,
    // and generate into a directory of its own (prost also writes the imported file).
    let join_out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("join");
    std::fs::create_dir_all(&join_out)?;
    tonic_prost_build::configure()
        .out_dir(join_out)
        .extern_path(".veil.attestation.v1", "crate::pb::attestation")
        .compile_protos(&["proto/join.proto"], &["proto"])?;
    Ok(())
}
