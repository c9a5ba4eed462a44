//! gRPC server reflection, advertising only the service a binary serves.

use tonic_reflection::server::Builder;

/// A reflection builder for `service` (e.g. `orders.v1.CommandService`) and the
/// health service. The descriptor set holds both order services, so without
/// the names a binary would also advertise the one it does not serve. Call it
/// once per reflection version (`build_v1`, `build_v1alpha`).
pub fn builder(service: &str) -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service)
        .with_service_name("grpc.health.v1.Health")
}
