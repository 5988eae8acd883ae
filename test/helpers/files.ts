/**
 * Local test data: files of random bytes, written in large blocks (fast for hundreds of MiB).
 * Is: a helper for tests and benchmarks. Is not: a source of reproducible content (use
 * s3tool's gen() for that).
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";

const BLOCK = 8 * 1024 * 1024;

/** Write `bytes` random bytes to `path` (one random block repeated). */
export function writeRandom(path: string, bytes: number): void {
  const block = randomBytes(Math.min(bytes, BLOCK));
  const fd = openSync(path, "w");
  try {
    for (let left = bytes; left > 0; left -= block.length) writeSync(fd, block, 0, Math.min(left, block.length));
  } finally {
    closeSync(fd);
  }
}
