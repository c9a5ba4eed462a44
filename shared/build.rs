//! Compiles `proto/orders/v1/*.proto` with the pure-Rust `protox` compiler (no `protoc`).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        "orders/v1/common.proto",
        "orders/v1/events.proto",
        "orders/v1/command_service.proto",
        "orders/v1/command_admin_service.proto",
        "orders/v1/query_service.proto",
        "orders/v1/projection_admin_service.proto",
        "orders/v1/replication_service.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("orders_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[allow(clippy::all, clippy::pedantic)]")
        // Malformed requests are INVALID_ARGUMENT naming the field, not INTERNAL.
        .codec_path("crate::grpc_codec::OrdersCodec")
        .compile_fds(fds)?;
    Ok(())
}
