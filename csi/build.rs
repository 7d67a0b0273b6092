//! The CSI specification's messages and services, compiled from
//! `proto/csi.proto` (the spec's v1 file, vendored) with protox: a
//! protobuf compiler in Rust, so no `protoc` is needed to build.
fn main() {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let fds = protox::compile(["csi.proto"], ["proto"]).expect("proto/csi.proto compiles");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("CSI code generated");
}
