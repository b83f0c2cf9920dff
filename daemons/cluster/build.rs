//! Generates the client side of the cluster link from the root's `proto/cluster.proto` (the one
//! contract both daemons compile). Needs `protoc` (Debian `protobuf-compiler`, from `scripts/setup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../root/proto/cluster.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["../root/proto/cluster.proto"], &["../root/proto"])?;
    Ok(())
}
