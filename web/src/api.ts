// Where the services are (`/config.json`, written by query-service) and the
// two gRPC-Web clients built from the descriptors generated from proto/.
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { CommandService } from "./gen/orders/v1/command_service_pb";
import { QueryService } from "./gen/orders/v1/query_service_pb";

export interface Clients {
  query: Client<typeof QueryService>;
  command: Client<typeof CommandService>;
}

interface Config {
  queryUrl: string;
  commandUrl: string;
}

/** A service bound to 0.0.0.0 or [::] is reached on the host the page came from. */
export function reachable(url: string): string {
  const parsed = new URL(url);
  if (parsed.hostname === "0.0.0.0" || parsed.hostname === "[::]") {
    parsed.hostname = location.hostname;
  }
  return parsed.toString().replace(/\/$/, "");
}

export async function connect(): Promise<Clients> {
  const response = await fetch("config.json", { cache: "no-cache" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  const config = (await response.json()) as Config;
  const transport = (url: string) => createGrpcWebTransport({ baseUrl: reachable(url) });
  return {
    query: createClient(QueryService, transport(config.queryUrl)),
    command: createClient(CommandService, transport(config.commandUrl)),
  };
}
