//! Bearer tokens for the suites that turn auth on.

use tonic::metadata::MetadataValue;

pub const COMMAND_TOKEN: &str = "cmd-token-3f9a1c";
pub const SUBSCRIBE_TOKEN: &str = "sub-token-77e0b2";
pub const QUERY_TOKEN: &str = "qry-token-c41d5e";

/// `message` with `authorization: Bearer <token>`, or without it for `None`.
pub fn bearer<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii token");
        request.metadata_mut().insert("authorization", value);
    }
    request
}
