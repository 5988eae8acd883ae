/**
 * Local test data and checks: files of random bytes, written in large blocks (fast for hundreds
 * of MiB); the sha256 of a file, streamed; the regular files under a directory.
 * Is: a helper for tests and benchmarks. Is not: a source of reproducible content (use
 * s3tool's gen() for that).
 */
import { closeSync, lstatSync, openSync, readdirSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";

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

/** sha256 of a file, read in chunks (large files too). */
export async function sha256File(path: string): Promise<string> {
  const h = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(path).stream()) h.update(chunk);
  return h.digest("hex");
}

/** Regular files under `root` (relative paths, sorted), never following symlinks. */
export function regularFiles(root: string, rel = ""): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, rel))) {
    const r = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(root, r));
    if (st.isDirectory()) out.push(...regularFiles(root, r));
    else if (st.isFile()) out.push(r);
  }
  return out.sort();
}
