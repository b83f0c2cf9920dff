//! Generates the cluster-link gRPC code (messages, server and client) from
//! `proto/cluster.proto` when the `grpc` feature is on. Needs `protoc` (Debian
//! `protobuf-compiler`, installed by `scripts/setup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "grpc")]
    {
        println!("cargo:rerun-if-changed=proto/cluster.proto");
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .compile_protos(&["proto/cluster.proto"], &["proto"])?;
    }
    Ok(())
}
