/**
 * The typed configuration every other module receives.
 *
 * Is: plain data types and defaults. Is not: the parser (`parse.ts`) or validation (`load.ts`).
 */

export interface BucketConfig {
  /** INI section name (used in messages). */
  section: string;
  /** S3 bucket name. */
  bucket: string;
  /** Static credentials; both undefined means: use the standard AWS chain. */
  accessKeyId: string | undefined;
  secretAccessKey: string | undefined;
  region: string;
  /** Custom endpoint URL (MinIO, Ceph, ...); undefined means AWS. */
  endpoint: string | undefined;
  /** Absolute path where the bucket is mounted; default `/<bucket>`. */
  mountpoint: string;
  /**
   * Workdir relative to the bucket root, no leading/trailing slash, e.g. `workdir` or `runs/a`.
   * Undefined when unset or ignored: the mount is then read-only everywhere.
   */
  workdir: string | undefined;
  /** Directory holding `.<bucket>/`, `.<bucket>.index`, `.<bucket>.pid`. Default `/tmp/bucketfs`. */
  cachePath: string;
  /** Marker file name uploaded last, default `.exitcode`. */
  lastUploadFile: string;
  /** Seconds listings and attributes outside the workdir are trusted. */
  metadataTtl: number;
  /** Parallel transfers for prefetch and upload. */
  transferConcurrency: number;
  /** Multipart part size in bytes. */
  partSize: number;
  /** Bytes per ranged GET when streaming a large object to a sequential reader. */
  readChunkSize: number;
  /** Ranged GETs in flight per object being streamed. */
  readConcurrency: number;
  /** Largest read-ahead window for a sequential reader, in bytes. */
  readAhead: number;
  /** Seconds a workdir lease lasts without renewal (renewed every third of it). */
  leaseTime: number;
}

export interface Config {
  /** Path the config was read from. */
  file: string;
  buckets: BucketConfig[];
  /** Non-fatal findings (ignored workdir, loose permissions), already phrased for a log line. */
  warnings: string[];
}

export const DEFAULTS = {
  cachePath: "/tmp/bucketfs",
  lastUploadFile: ".exitcode",
  region: "us-east-1",
  metadataTtl: 300,
  transferConcurrency: 16,
  partSize: 16 * 1024 * 1024,
  readChunkSize: 8 * 1024 * 1024,
  readConcurrency: 8,
  readAhead: 64 * 1024 * 1024,
  leaseTime: 120,
} as const;
