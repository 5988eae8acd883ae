/**
 * S3 and socket failures as `StoreError`s, and which of them the retry policy retries.
 *
 * Is: `s3Error` (an HTTP error answer: status + S3 code from the XML body; a redirect names the
 * region S3 asks for), `toStoreError` (anything a fetch, a stream or a timer threw), and
 * `isRetryable` (THE list of what is worth another attempt: throttling, 5xx, resets, timeouts,
 * malformed answers, RequestTimeout, digest mismatches, expired tokens).
 * Is not: the errno mapping (fs/errors.ts) or the retry loop (request.ts).
 */
import { redact } from "../../util/log.ts";
import { StoreError, type StoreErrorKind } from "../types.ts";
import { xmlText } from "./xml.ts";

/** Where a failure happened, for the message and the error's fields. */
export interface Where {
  op: string;
  bucket: string;
  key: string;
}

const NOT_FOUND = new Set(["NoSuchKey", "NotFound", "NoSuchUpload"]);
const ACCESS_DENIED = new Set([
  "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
  "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "CredentialsProviderError", "InvalidClientTokenId",
  "RequestTimeTooSkewed",
]);
const THROTTLED = new Set(["SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded", "ServiceUnavailable", "RequestThrottled"]);
/** S3 codes that say "send it again": the request or its body was damaged or too slow on the way. */
export const RETRY_CODES = new Set([
  "RequestTimeout", "BadDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch", "InvalidChecksum",
  "InternalError", "ExpiredToken", "TokenRefreshRequired", "IncompleteBody",
]);
/** Codes after which the credentials are fetched again before the next attempt. */
export const REFRESH_CODES = new Set(["ExpiredToken", "TokenRefreshRequired", "InvalidToken"]);
const NETWORK_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN",
  "ECONNABORTED", "ENETDOWN", "ConnectionRefused", "ConnectionClosed", "ConnectionReset", "FailedToOpenSocket",
  "UND_ERR_SOCKET", "ERR_STREAM_PREMATURE_CLOSE",
  // A malformed answer (status line, header block, chunk-size line) is retried like a reset.
  "EPROTO", "Malformed_HTTP_Response", "HPE_INVALID_CONSTANT", "HPE_INVALID_CHUNK_SIZE", "ERR_TLS_HANDSHAKE_TIMEOUT",
]);

function kindOf(status: number | undefined, code: string | undefined): StoreErrorKind {
  if (code === "NoSuchBucket") return "no-such-bucket";
  if (code !== undefined && NOT_FOUND.has(code)) return "not-found";
  if (code !== undefined && ACCESS_DENIED.has(code)) return "access-denied";
  if (code !== undefined && THROTTLED.has(code)) return "throttled";
  if (code === "PreconditionFailed" || code === "ConditionalRequestConflict") return "precondition";
  if (status === 404) return "not-found";
  if (status === 403 || status === 401) return "access-denied";
  if (status === 503 || status === 429) return "throttled";
  if (status === 412) return "precondition";
  return "other";
}

function prefix(w: Where): string {
  return `[s3] ${w.op} ${w.bucket}/${w.key}`;
}

/**
 * An error answer from S3: `status` and the `<Code>`/`<Message>` of its XML body (empty for HEAD).
 * A redirect (the bucket lives in another region) names the region S3 asks for.
 */
export function s3Error(w: Where, status: number, body: string, headers?: Headers): StoreError {
  const code = xmlText(/<Code>([^<]*)<\/Code>/.exec(body)?.[1] ?? statusName(status));
  let message = xmlText(/<Message>([^<]*)<\/Message>/.exec(body)?.[1] ?? "").replace(/\s+/g, " ").trim();
  if (status >= 300 && status < 400 || code === "PermanentRedirect" || code === "AuthorizationHeaderMalformed") {
    const region = headers?.get("x-amz-bucket-region") ?? xmlText(/<Region>([^<]*)<\/Region>/.exec(body)?.[1] ?? "");
    const endpoint = xmlText(/<Endpoint>([^<]*)<\/Endpoint>/.exec(body)?.[1] ?? "") || headers?.get("location") || "";
    if (region) message = `${message ? `${message}; ` : ""}the bucket is in region ${region}: set region = ${region} in the config`;
    else if (endpoint) message = `${message ? `${message}; ` : ""}the server redirects to ${endpoint}: set endpoint/region in the config`;
    else if (status >= 300 && status < 400) message = `${message ? `${message}; ` : ""}the server redirects elsewhere (another region?): check region and endpoint in the config`;
  }
  return new StoreError(kindOf(status, code), redact(`${prefix(w)}: ${status} ${code}${message ? `: ${message}` : ""}`), {
    status, code, op: w.op, bucket: w.bucket, key: w.key,
  });
}

/**
 * Anything thrown while a request ran (fetch, body stream, timer, abort) as a StoreError.
 * `aborted`: the caller's own signal fired (whatever the thrown value says, it was the abort).
 */
export function toStoreError(err: unknown, w: Where, aborted = false): StoreError {
  if (err instanceof StoreError) return err;
  const rec = typeof err === "object" && err !== null ? (err as Record<string, unknown>) : undefined;
  const name = typeof rec?.name === "string" ? rec.name : "Error";
  const message = (typeof rec?.message === "string" ? rec.message : String(err)).replace(/\s+/g, " ").trim();
  let code = typeof rec?.code === "string" ? rec.code : undefined;
  const cause = typeof rec?.cause === "object" && rec.cause !== null ? (rec.cause as Record<string, unknown>) : undefined;
  if (code === undefined && typeof cause?.code === "string") code = cause.code;
  let kind: StoreErrorKind = "other";
  if (aborted || name === "AbortError" || code === "ABORT_ERR") kind = "aborted";
  else if (name === "TimeoutError") kind = "network";
  else if (code !== undefined && NETWORK_CODES.has(code)) kind = "network";
  else if (/socket hang up|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|connection (?:refused|reset|closed)|socket (?:closed|timed out)|connection was closed|closed unexpectedly|unable to connect|ended before|premature/i.test(message)) kind = "network";
  const word = kind === "other" ? "error" : kind;
  const what = code ?? name;
  return new StoreError(kind, redact(`${prefix(w)}: ${word} ${what}${message && message !== what ? `: ${message}` : ""}`), {
    cause: err, code, op: w.op, bucket: w.bucket, key: w.key,
  });
}

/** THE retry rule: worth another attempt of the same request. */
export function isRetryable(e: StoreError): boolean {
  if (e.kind === "aborted") return false;
  if (e.kind === "corrupt" || e.kind === "throttled" || e.kind === "network") return true;
  if (e.status !== undefined && e.status >= 500) return true;
  return e.code !== undefined && RETRY_CODES.has(e.code);
}

function statusName(status: number): string {
  switch (status) {
    case 301: return "PermanentRedirect";
    case 307: return "TemporaryRedirect";
    case 400: return "BadRequest";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 412: return "PreconditionFailed";
    case 429: return "TooManyRequests";
    case 500: return "InternalError";
    case 503: return "ServiceUnavailable";
    default: return `HTTP${status}`;
  }
}
