/**
 * S3 request counters of the benchmark's MinIO, by API name (GetObject, HeadObject,
 * ListObjectsV2, PutObject, ...), read from its Prometheus v3 endpoint
 * `/minio/metrics/v3/api/requests` (not cached, unlike the v2 cluster endpoint's ~10 s).
 * The bearer token is a JWT signed with the root secret, as `mc admin prometheus generate`
 * makes it. Used to show how many requests each filesystem
 * sends for the same work.
 *
 * Is: a small metrics reader. Is not: a general Prometheus client.
 */
import { createHmac } from "node:crypto";
import type { S3Server } from "../../test/helpers/s3server.ts";

function token(server: S3Server): string {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = b64({ alg: "HS512", typ: "JWT" });
  const body = b64({ exp: Math.floor(Date.now() / 1000) + 3600, sub: server.accessKey, iss: "prometheus" });
  const sig = createHmac("sha512", server.secretKey).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** Requests served so far, by API (empty map when the server does not expose them). */
export async function s3Requests(server: S3Server): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  if (server.kind !== "minio") return out;
  try {
    const r = await fetch(`${server.endpoint}/minio/metrics/v3/api/requests`, {
      headers: { Authorization: `Bearer ${token(server)}` },
      signal: AbortSignal.timeout(5000),
    });
    if (r.status !== 200) return out;
    for (const line of (await r.text()).split("\n")) {
      const m = /^minio_api_requests_total\{([^}]*)\}\s+([0-9.e+]+)/.exec(line);
      if (!m) continue;
      const api = /name="([^"]+)"/.exec(m[1] ?? "")?.[1] ?? "?";
      out.set(api, (out.get(api) ?? 0) + Number(m[2]));
    }
  } catch {
    /* metrics are optional */
  }
  return out;
}

/** after - before, keeping only APIs that changed; e.g. "GetObject 970, HeadObject 3". */
export function requestDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const d = new Map<string, number>();
  for (const [k, v] of after) {
    const x = v - (before.get(k) ?? 0);
    if (x > 0) d.set(k, x);
  }
  return d;
}

export function fmtRequests(d: Map<string, number>): string {
  if (d.size === 0) return "n/a";
  return [...d.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
}
