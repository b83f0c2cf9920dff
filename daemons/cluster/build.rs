//! Generates the cluster link from the root's `proto/cluster.proto` (the one contract both
//! daemons compile): the client, and the server side that only the tests' fake root uses.
//! Needs `protoc` (Debian `protobuf-compiler`, from `scripts/setup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../root/proto/cluster.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["../root/proto/cluster.proto"], &["../root/proto"])?;
    Ok(())
}
