//! Generates the gRPC stubs. A protoc shipped inside the `protoc-bin-vendored`
//! crate is used so that a fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto = "proto/connect/nameservice/v1/nameservice.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(true)
        .build_transport(false)
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
