/**
 * Credentials for signing: static keys from the config, or the AWS SDK's default chain (env,
 * shared config/SSO profile, credential_process, web identity, container and instance roles).
 *
 * Is: one cached identity per store, used until shortly before it expires (half its lifetime
 * before, at most 5 minutes: a 2-minute identity is fetched again after 60 s, not per request) or until S3 says the token expired; one fetch at a time however many requests ask;
 * each fetch bounded by FETCH_TIMEOUT_MS. A refresh runs in the background while the old
 * identity is still valid: if it fails or hangs, requests go on with the old one until it
 * expires (a warning says so and when), and the refresh is tried again after a pause. Only an
 * expired or missing identity makes a request wait for a fetch. Is not: a signer (sign.ts) and
 * never a log line with a key.
 */
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { logger } from "../../util/log.ts";
import { StoreError } from "../types.ts";

const log = logger("s3");

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** ms since epoch; undefined for keys that never expire. */
  expiresAt?: number;
}

/** What `status --json` shows of the credentials (never a key). */
export interface CredentialState {
  kind: "static" | "default chain";
  /** Expiry of the identity in use (ms since epoch), null if it never expires or none yet. */
  expiresAtMs: number | null;
  /** Fetches started (the first one included). */
  fetches: number;
  /** Why the last refresh failed, while the identity it should have replaced is still used. */
  refreshError: string | null;
}

export interface CredentialSource {
  /** The identity to sign with; waits (at most FETCH_TIMEOUT_MS, or until `signal`) only when none is valid. */
  get(signal?: AbortSignal): Promise<Credentials>;
  /** Forget the cached identity (S3 said it expired); the next get() fetches a new one. */
  invalidate(): void;
  readonly kind: "static" | "default chain";
  state(): CredentialState;
}

/** Refresh at most this long before expiry... */
const REFRESH_MARGIN_MS = 5 * 60_000;
/** ...and at most this fraction of the identity's lifetime before it. */
const REFRESH_FRACTION = 0.5;
/** One fetch (a credential_process, an instance-metadata call, an STS exchange) gives up after this. */
export const FETCH_TIMEOUT_MS = 15_000;
/** After a failed background refresh, the next one waits this long (or half the time left). */
const REFRESH_RETRY_MS = 30_000;

type Identity = { accessKeyId: string; secretAccessKey: string; sessionToken?: string; expiration?: Date };
export type Provider = (o?: { forceRefresh?: boolean }) => Promise<Identity>;

export function credentialSource(
  accessKeyId: string | undefined, secretAccessKey: string | undefined,
  opts: { provider?: Provider; fetchTimeoutMs?: number; now?: () => number } = {},
): CredentialSource {
  if (accessKeyId !== undefined && secretAccessKey !== undefined) {
    const c: Credentials = { accessKeyId, secretAccessKey };
    return {
      get: async () => c, invalidate: () => {}, kind: "static",
      state: () => ({ kind: "static", expiresAtMs: null, fetches: 0, refreshError: null }),
    };
  }
  const now = opts.now ?? Date.now;
  const timeoutMs = opts.fetchTimeoutMs ?? FETCH_TIMEOUT_MS;
  let provider: Provider | undefined = opts.provider;
  let cached: Credentials | undefined;
  /** When the cached identity should be replaced (before its expiry). */
  let refreshAt = Infinity;
  /** No background refresh before this (after a failed one). */
  let nextTry = 0;
  let pending: Promise<Credentials> | undefined;
  let fetches = 0;
  let refreshError: string | null = null;

  const valid = (c: Credentials | undefined): c is Credentials => c !== undefined && (c.expiresAt === undefined || c.expiresAt > now() + 5_000);

  const fetchOnce = async (): Promise<Credentials> => {
    provider ??= defaultProvider() as Provider;
    fetches++;
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the credential provider gave no answer in ${timeoutMs / 1000} s`)), timeoutMs);
    });
    try {
      // forceRefresh: the SDK's own memo would hand back the identity we just decided is stale.
      const id = await Promise.race([provider({ forceRefresh: cached !== undefined }), timeout]);
      const c: Credentials = { accessKeyId: id.accessKeyId, secretAccessKey: id.secretAccessKey };
      if (id.sessionToken) c.sessionToken = id.sessionToken;
      if (id.expiration) c.expiresAt = id.expiration.getTime();
      const t = now();
      cached = c;
      refreshError = null;
      refreshAt = c.expiresAt === undefined ? Infinity : c.expiresAt - Math.min(REFRESH_MARGIN_MS, Math.max(0, (c.expiresAt - t) * REFRESH_FRACTION));
      return c;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new StoreError("access-denied", `[s3] no AWS credentials: ${msg}`, { cause: err, code: "CredentialsProviderError" });
    } finally {
      clearTimeout(timer);
    }
  };

  const start = (): Promise<Credentials> => {
    pending ??= fetchOnce().finally(() => (pending = undefined));
    return pending;
  };

  const refreshInBackground = (old: Credentials): void => {
    start().catch((err: unknown) => {
      const msg = err instanceof Error ? err.message : String(err);
      refreshError = msg;
      const left = (old.expiresAt ?? Infinity) - now();
      nextTry = now() + Math.min(REFRESH_RETRY_MS, Math.max(1_000, left / 2));
      const until = old.expiresAt === undefined ? "" : ` until they expire at ${new Date(old.expiresAt).toISOString()}`;
      log.warn(`refreshing the AWS credentials failed (${msg.replace(/^\[s3\] no AWS credentials: /, "")}); using the current ones${until}`);
    });
  };

  const wait = (p: Promise<Credentials>, signal: AbortSignal | undefined): Promise<Credentials> => {
    if (!signal) return p;
    signal.throwIfAborted();
    return new Promise<Credentials>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  };

  return {
    get(signal) {
      const c = cached;
      if (valid(c)) {
        if (now() >= refreshAt && now() >= nextTry && pending === undefined) refreshInBackground(c);
        return Promise.resolve(c);
      }
      return wait(start(), signal);
    },
    invalidate() {
      if (cached) cached = { ...cached, expiresAt: 0 };
    },
    kind: "default chain",
    state: () => ({ kind: "default chain", expiresAtMs: cached?.expiresAt ?? null, fetches, refreshError }),
  };
}
