//! Compiles the baseline echo service `proto/bench/v1/echo.proto` with the
//! pure-Rust `protox` compiler (no `protoc`), as `shared/build.rs` does.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let files = ["bench/v1/echo.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[allow(clippy::all, clippy::pedantic)]")
        .compile_fds(fds)?;
    Ok(())
}
