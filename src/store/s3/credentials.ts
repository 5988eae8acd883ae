/**
 * Credentials for signing: static keys from the config, or the AWS SDK's default chain (env,
 * shared config/SSO profile, web identity, container and instance roles).
 *
 * Is: one cached identity per store, fetched again 5 minutes before it expires (instance roles
 * and SSO sessions expire during long pipelines) or when S3 says the token expired; one fetch at
 * a time however many requests ask. Is not: a signer (sign.ts) and never a log line with a key.
 */
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { StoreError } from "../types.ts";

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** ms since epoch; undefined for keys that never expire. */
  expiresAt?: number;
}

export interface CredentialSource {
  get(): Promise<Credentials>;
  /** Forget the cached identity (S3 said it expired); the next get() fetches a new one. */
  invalidate(): void;
  readonly kind: "static" | "default chain";
}

/** Refresh this long before the expiry S3 would enforce. */
const REFRESH_MARGIN_MS = 5 * 60_000;

export function credentialSource(accessKeyId: string | undefined, secretAccessKey: string | undefined): CredentialSource {
  if (accessKeyId !== undefined && secretAccessKey !== undefined) {
    const c: Credentials = { accessKeyId, secretAccessKey };
    return { get: async () => c, invalidate: () => {}, kind: "static" };
  }
  let provider: (() => Promise<{ accessKeyId: string; secretAccessKey: string; sessionToken?: string; expiration?: Date }>) | undefined;
  let cached: Credentials | undefined;
  let pending: Promise<Credentials> | undefined;
  const fresh = (c: Credentials | undefined): c is Credentials =>
    c !== undefined && (c.expiresAt === undefined || c.expiresAt - REFRESH_MARGIN_MS > Date.now());
  const fetchNew = async (): Promise<Credentials> => {
    provider ??= defaultProvider();
    try {
      // forceRefresh: the SDK's own memo would hand back the identity we just decided is stale.
      const id = await (provider as (o?: { forceRefresh?: boolean }) => ReturnType<NonNullable<typeof provider>>)({ forceRefresh: cached !== undefined });
      const c: Credentials = { accessKeyId: id.accessKeyId, secretAccessKey: id.secretAccessKey };
      if (id.sessionToken) c.sessionToken = id.sessionToken;
      if (id.expiration) c.expiresAt = id.expiration.getTime();
      cached = c;
      return c;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new StoreError("access-denied", `[s3] no AWS credentials: ${msg}`, { cause: err, code: "CredentialsProviderError" });
    }
  };
  return {
    get() {
      if (fresh(cached)) return Promise.resolve(cached);
      pending ??= fetchNew().finally(() => (pending = undefined));
      return pending;
    },
    invalidate() {
      if (cached) cached = { ...cached, expiresAt: 0 };
    },
    kind: "default chain",
  };
}
