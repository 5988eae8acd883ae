/**
 * The typed configuration every other module receives.
 *
 * Is: the `Config` type; `BucketConfig` and `DEFAULTS` are derived from the key table
 * (`keys.ts`) and re-exported here. Is not: the parser (`parse.ts`) or validation (`load.ts`).
 */
import type { BucketConfig } from "./keys.ts";

export { DEFAULTS, type BucketConfig, type MinFree } from "./keys.ts";

export interface Config {
  /** Path the config was read from. */
  file: string;
  buckets: BucketConfig[];
  /** Non-fatal findings (ignored workdir, loose permissions), already phrased for a log line. */
  warnings: string[];
}
