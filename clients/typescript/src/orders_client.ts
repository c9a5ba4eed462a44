// A small client of the orders.v1 API over real gRPC (HTTP/2), with the code
// generated from proto/ by protoc-gen-es (`npm run generate`, into src/gen/).
//
//   const client = connectOrders({ commandUrl: "http://127.0.0.1:50051",
//     queryUrl: "http://127.0.0.1:50052", token, queryToken });
//   const ack = await client.command.createOrder({ customerId: "c", items: [...] });
//   const { order } = await client.query.getOrder({ orderId: ack.orderId, minPosition: ack.position });
//   client.close();
//
// Tokens go as `authorization: Bearer <token>`. A failed call throws a
// ConnectError; `fieldViolations` reads the google.rpc.BadRequest detail that
// names the field of an INVALID_ARGUMENT.

import {
  Code,
  ConnectError,
  createClient,
  type Client,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { CommandService } from "./gen/orders/v1/command_service_pb.js";
import { QueryService } from "./gen/orders/v1/query_service_pb.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  type BadRequest_FieldViolation,
  type ErrorInfo,
} from "./gen/google/rpc/error_details_pb.js";

export { Code, ConnectError };

export interface OrdersOptions {
  /** command-service, e.g. `http://127.0.0.1:50051` (`https://` for TLS). */
  commandUrl: string;
  /** query-service, e.g. `http://127.0.0.1:50052`. */
  queryUrl: string;
  /** Sent to command-service (its --auth-token). */
  token?: string;
  /** Sent to query-service (its --auth-token). */
  queryToken?: string;
}

export interface OrdersClient {
  command: Client<typeof CommandService>;
  query: Client<typeof QueryService>;
  /** Closes both HTTP/2 connections. */
  close(): void;
}

/** Adds `authorization: Bearer <token>` to every call when a token is given. */
export function bearer(token: string | undefined): Interceptor {
  return (next) => async (request) => {
    if (token !== undefined) {
      request.header.set("authorization", `Bearer ${token}`);
    }
    return next(request);
  };
}

function transport(baseUrl: string, token: string | undefined) {
  const sessionManager = new Http2SessionManager(baseUrl);
  return {
    sessionManager,
    transport: createGrpcTransport({
      baseUrl,
      sessionManager,
      interceptors: [bearer(token)],
    }),
  };
}

export function connectOrders(options: OrdersOptions): OrdersClient {
  const command = transport(options.commandUrl, options.token);
  const query = transport(options.queryUrl, options.queryToken);
  return {
    command: createClient(CommandService, command.transport),
    query: createClient(QueryService, query.transport),
    close() {
      command.sessionManager.abort();
      query.sessionManager.abort();
    },
  };
}

/** The google.rpc.BadRequest field violations of an error (empty if none). */
export function fieldViolations(error: unknown): BadRequest_FieldViolation[] {
  return ConnectError.from(error)
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations);
}

/** The google.rpc.ErrorInfo details of an error (e.g. a version conflict). */
export function errorInfo(error: unknown): ErrorInfo[] {
  return ConnectError.from(error).findDetails(ErrorInfoSchema);
}
