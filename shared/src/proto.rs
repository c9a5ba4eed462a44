//! The code generated from `proto/orders/v1` (by `build.rs`), untouched.

#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
pub mod orders {
    pub mod v1 {
        tonic::include_proto!("orders.v1");
    }
}

pub use orders::v1::*;

/// The encoded `FileDescriptorSet` of every `orders.v1` file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orders_descriptor.bin"));
