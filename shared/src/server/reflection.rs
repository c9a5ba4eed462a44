//! gRPC server reflection, advertising only the service a binary serves, and
//! the method names of a service as the descriptor set knows them.

use prost::Message;
use tonic_reflection::server::Builder;

/// A reflection builder for `service` (e.g. `orders.v1.CommandService`) and the
/// health service. The descriptor set holds both order services, so without
/// the names a binary would also advertise the one it does not serve. Call it
/// once per reflection version (`build_v1`, `build_v1alpha`).
pub fn builder(service: &str) -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc's BadRequest and ErrorInfo, so that clients using
        // reflection (grpcurl) can decode the error details.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service)
        .with_service_name("grpc.health.v1.Health")
}

/// The method names of `service` (e.g. `orders.v1.CommandService`) in the
/// `orders.v1` descriptor set; empty for a service it does not hold.
pub fn methods(service: &str) -> Vec<String> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().filter(move |s| match file.package() {
                "" => s.name() == service,
                package => format!("{package}.{}", s.name()) == service,
            })
        })
        .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_descriptor_set_names_each_service_s_methods() {
        let methods = super::methods("orders.v1.CommandService");
        assert!(methods.iter().any(|m| m == "CreateOrder"));
        assert!(methods.iter().any(|m| m == "SubscribeEvents"));
        assert!(super::methods("orders.v1.QueryService")
            .iter()
            .any(|m| m == "WatchOrder"));
        assert!(super::methods("made.Up").is_empty());
    }
}
