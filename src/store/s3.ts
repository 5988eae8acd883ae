/**
 * The S3 implementation of the `ObjectStore` port (see `types.ts`).
 *
 * Is: the assembly of the operations in `s3/` (one file per S3 operation: list, head, get, put
 * and multipart) over ONE request path (`s3/request.ts`: SigV4, Bun's fetch, one retry policy)
 * with one credential source (`s3/credentials.ts`: static keys or the AWS default chain,
 * refreshed before expiry) and one error mapping (`s3/errors.ts`); and `storeNetworkStatus`,
 * what `status --json` shows of the wire (GET bounds, clock offset, credentials).
 * Is not: a cache, or anything that knows about the filesystem layout (temp names, renames).
 *
 * Works on AWS (virtual-hosted URLs) and on S3-compatible servers with a custom endpoint (path
 * style). Upload checksums are plain headers (x-amz-checksum-crc64nvme; CRC32 for bucketfs' own small records), never aws-chunked trailers,
 * which several third-party servers mis-store (research notes, ts-deps.md section 4.1).
 */
import type { BucketConfig } from "../config/types.ts";
import { logger, redact } from "../util/log.ts";
import type { ObjectInfo, ObjectStore } from "./types.ts";
import { credentialSource } from "./s3/credentials.ts";
import { download, getPart, getSmall, streamRange } from "./s3/get.ts";
import { hasPrefix, headIntegrity, headObject, headPart } from "./s3/head.ts";
import { listPages } from "./s3/list.ts";
import { putSmall, upload, type PutContext } from "./s3/put.ts";
import { networkState, s3Context, type NetworkState, type RetryPolicy } from "./s3/request.ts";
import type { CredentialState } from "./s3/credentials.ts";

const log = logger("s3");

/** The part of a bucket's configuration the store needs. */
export type S3StoreConfig = Pick<
  BucketConfig,
  "bucket" | "accessKeyId" | "secretAccessKey" | "region" | "endpoint" | "partSize" | "transferConcurrency"
>;

/** Transport tuning; the defaults suit production, tests shorten them. */
export interface S3StoreTuning {
  /** No response headers or body bytes for this long fails an attempt (ms). Default 30000. */
  idleTimeoutMs?: number;
  /** Attempts per request, including the first. Default 6. */
  maxAttempts?: number;
  /** First backoff cap (ms); doubles per attempt up to 5 s. Default 100. */
  retryBaseMs?: number;
  /** TCP connect plus TLS handshake (ms). Default 10000. */
  connectTimeoutMs?: number;
  /** Reads, listings, HEADs: time without progress over all attempts before the error (ms). Default 45000. */
  stallBudgetMs?: number;
}

/** The wire as one bucket's store sees it: the process-wide request path plus its credentials. */
export type StoreNetworkStatus = NetworkState & { credentials: CredentialState };

const credentialStates = new Map<string, () => CredentialState>();

/** For `status --json`: the request path's bounds and counters, and `bucket`'s credentials. */
export function storeNetworkStatus(bucket: string): StoreNetworkStatus {
  const creds = credentialStates.get(bucket)?.() ?? { kind: "static", expiresAtMs: null, fetches: 0, refreshError: null };
  return { ...networkState(), credentials: creds };
}

/** Parts of one file in flight at most (the process-wide byte bound in put.ts applies too). */
const MAX_PART_CONCURRENCY = 8;

export function createS3Store(cfg: S3StoreConfig, tuning: S3StoreTuning = {}): ObjectStore {
  const retry: Partial<RetryPolicy> = {};
  if (tuning.maxAttempts !== undefined) retry.maxAttempts = tuning.maxAttempts;
  if (tuning.retryBaseMs !== undefined) retry.baseMs = tuning.retryBaseMs;
  const creds = credentialSource(cfg.accessKeyId, cfg.secretAccessKey);
  credentialStates.set(cfg.bucket, () => creds.state());
  const base = s3Context({
    bucket: cfg.bucket, region: cfg.region, endpoint: cfg.endpoint, creds, retry,
    ...(tuning.idleTimeoutMs !== undefined ? { idleTimeoutMs: tuning.idleTimeoutMs } : {}),
    ...(tuning.connectTimeoutMs !== undefined ? { connectTimeoutMs: tuning.connectTimeoutMs } : {}),
    ...(tuning.stallBudgetMs !== undefined ? { stallBudgetMs: tuning.stallBudgetMs } : {}),
  });
  const ctx: PutContext = { ...base, partSize: cfg.partSize, partConcurrency: Math.max(1, Math.min(cfg.transferConcurrency, MAX_PART_CONCURRENCY)) };
  log.debug(
    `client for ${cfg.bucket}: region ${cfg.region}, endpoint ${cfg.endpoint === undefined ? "AWS" : redact(cfg.endpoint)}, ` +
      `credentials ${creds.kind}, ${ctx.retry.maxAttempts} attempts per request`,
  );
  return {
    bucket: cfg.bucket,
    async listDir(prefix, signal) {
      const objects: ObjectInfo[] = [];
      const prefixes: string[] = [];
      for await (const page of listPages(ctx, prefix, "/", signal)) {
        // The directory marker itself (`prefix`) is not an entry of its own level.
        for (const o of page.objects) if (o.key !== prefix) objects.push(o);
        prefixes.push(...page.prefixes);
      }
      return { objects, prefixes };
    },
    async *listAll(prefix, signal) {
      for await (const page of listPages(ctx, prefix, undefined, signal)) yield* page.objects;
    },
    head: (key, signal) => headObject(ctx, key, signal),
    hasPrefix: (prefix, signal) => hasPrefix(ctx, prefix, signal),
    streamRange: (key, start, end, sink, signal, ifMatch) => streamRange(ctx, key, start, end, sink, signal, ifMatch),
    integrity: (key, signal, opts) => headIntegrity(ctx, key, signal, opts),
    headPart: (key, n, opts) => headPart(ctx, key, n, opts),
    getPart: (key, n, sink, opts) => getPart(ctx, key, n, sink, opts),
    download: (key, destPath, opts) => download(ctx, key, destPath, opts),
    upload: (key, srcPath, opts) => upload(ctx, key, srcPath, opts),
    getSmall: (key, signal) => getSmall(ctx, key, signal),
    putSmall: (key, body, cond, signal, deadline) => putSmall(ctx, key, body, cond, signal, deadline),
  };
}
