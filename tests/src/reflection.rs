//! A minimal gRPC server reflection client (what `grpcurl list` and `describe`
//! use), so the tests need neither grpcurl nor `.proto` files.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Status;

/// `grpc.reflection.v1.ServerReflectionRequest`, the fields the tests use.
#[derive(Clone, PartialEq, Message)]
pub struct ReflectionRequest {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(string, optional, tag = "4")]
    pub file_containing_symbol: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub list_services: Option<String>,
}

/// `grpc.reflection.v1.ServerReflectionResponse`, the fields the tests use.
#[derive(Clone, PartialEq, Message)]
pub struct ReflectionResponse {
    #[prost(message, optional, tag = "4")]
    pub file_descriptor_response: Option<FileDescriptorResponse>,
    #[prost(message, optional, tag = "6")]
    pub list_services_response: Option<ListServiceResponse>,
    #[prost(message, optional, tag = "7")]
    pub error_response: Option<ErrorResponse>,
}

#[derive(Clone, PartialEq, Message)]
pub struct FileDescriptorResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ServiceResponse {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ErrorResponse {
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// A protobuf codec for any prost message (tonic's lives in a crate the tests
/// do not depend on).
struct ProstCodec<E, D>(PhantomData<(E, D)>);

struct ProstEncoder<E>(PhantomData<E>);

struct ProstDecoder<D>(PhantomData<D>);

impl<E, D> Codec for ProstCodec<E, D>
where
    E: Message + Send + 'static,
    D: Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = ProstEncoder<E>;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

impl<E: Message> Encoder for ProstEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<D: Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Sends one request to the reflection service (`v1` or `v1alpha`) and returns
/// its one answer.
pub async fn ask(
    channel: Channel,
    version: &str,
    request: ReflectionRequest,
) -> Result<ReflectionResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = format!("/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo");
    let path = PathAndQuery::try_from(path).expect("a valid path");
    let requests = tokio_stream::iter(vec![request]);
    let mut answers = grpc
        .streaming(
            tonic::Request::new(requests),
            path,
            ProstCodec::<ReflectionRequest, ReflectionResponse>(PhantomData),
        )
        .await?
        .into_inner();
    answers
        .message()
        .await?
        .ok_or_else(|| Status::internal("the reflection stream ended without an answer"))
}

/// The names of the services `channel` lists over reflection `version`.
pub async fn list_services(channel: Channel, version: &str) -> Vec<String> {
    let request = ReflectionRequest {
        list_services: Some(String::new()),
        ..Default::default()
    };
    let listed = ask(channel, version, request)
        .await
        .unwrap_or_else(|s| panic!("reflection {version}: {s:?}"));
    listed
        .list_services_response
        .clone()
        .unwrap_or_else(|| panic!("reflection {version}: no service list: {listed:?}"))
        .service
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// The encoded file descriptors that define `symbol`, over reflection `version`.
pub async fn files_containing(channel: Channel, version: &str, symbol: &str) -> Vec<Vec<u8>> {
    let request = ReflectionRequest {
        file_containing_symbol: Some(symbol.to_owned()),
        ..Default::default()
    };
    let described = ask(channel, version, request)
        .await
        .unwrap_or_else(|s| panic!("reflection {version}: {s:?}"));
    described
        .file_descriptor_response
        .clone()
        .unwrap_or_else(|| panic!("reflection {version}: no descriptor: {described:?}"))
        .file_descriptor_proto
}
