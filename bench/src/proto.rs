//! The code generated from `proto/bench/v1/echo.proto` (by `build.rs`), untouched.

#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
mod bench_v1 {
    tonic::include_proto!("bench.v1");
}

pub use bench_v1::*;
