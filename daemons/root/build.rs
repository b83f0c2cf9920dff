//! Generates the cluster-link gRPC code (server and client) from `proto/cluster.proto`.
//! Needs `protoc` (Debian `protobuf-compiler`, installed by `scripts/setup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/cluster.proto"], &["proto"])?;
    Ok(())
}
