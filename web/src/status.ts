// The projection's status panel: applied vs head, lag, upstream connection,
// and the poison-event error when applying has stopped.
import type { GetProjectionStatusResponse } from "./gen/orders/v1/query_service_pb";
import { byId, showError, when } from "./dom";

export function renderStatus(s: GetProjectionStatusResponse): void {
  byId("status-applied").textContent = String(s.appliedPosition);
  byId("status-head").textContent = String(s.headPosition);
  byId("status-lag").textContent = String(s.lag);
  const connected = byId("status-connected");
  connected.textContent = s.connected ? "connected" : "disconnected";
  connected.className = s.connected ? "ok" : "bad";
  byId("status-last-applied").textContent = when(s.lastAppliedAt) || "never";
  byId("status").dataset.state = s.error
    ? "stopped"
    : s.paused
      ? "paused"
      : s.connected
        ? "ok"
        : "disconnected";
  const stopped = s.error
    ? `applying stopped at position ${s.stoppedPosition}: ${s.error}`
    : s.paused
      ? "applying paused (ProjectionAdminService.ResumeProjection resumes it)"
      : null;
  showError(byId("status-error"), stopped);
  // Parked events (ProjectionAdminService.SkipEvent or --park-after-stops):
  // never skipped silently, so always on the panel.
  const parked = byId("status-parked");
  parked.textContent = `${s.parkedEvents} (skipped ${s.skippedEvents})`;
  parked.className = s.parkedEvents > 0n ? "bad" : "";
  byId("status-rebuild").textContent = s.rebuilding
    ? `rebuilding, at ${s.rebuildPosition}`
    : "no";
}

/** query-service itself cannot be reached. */
export function renderUnreachable(message: string): void {
  byId("status").dataset.state = "unreachable";
  const connected = byId("status-connected");
  connected.textContent = "query-service unreachable";
  connected.className = "bad";
  showError(byId("status-error"), message);
}
