/**
 * S3 keys versus local paths: the guard that keeps every write inside the cache root.
 *
 * Is: pure functions deciding whether a key can be shown/stored as a path, and joining a
 * checked relative path onto a root with a final containment check. Is not: I/O.
 *
 * A key is usable when every "/"-separated segment is a valid file name: not empty (no
 * leading "/", no "//"), not "." or "..", no NUL, at most 255 bytes of UTF-8. A trailing
 * "/" marks a directory marker (`dir/`), whose segments obey the same rules.
 */
import { resolve, sep } from "node:path";

/** Longest file name Linux accepts (NAME_MAX), in bytes. */
export const NAME_MAX = 255;
/** Longest path we will build below a root, in bytes (PATH_MAX minus room for the root). */
export const REL_PATH_MAX = 3072;

export type KeyProblem = "empty-segment" | "dot-segment" | "nul" | "name-too-long" | "path-too-long" | "empty";

/** Why a single name (one segment) is unusable, or null when it is fine. */
export function nameProblem(name: string): KeyProblem | null {
  if (name === "") return "empty-segment";
  if (name === "." || name === "..") return "dot-segment";
  if (name.includes("\0")) return "nul";
  if (Buffer.byteLength(name, "utf8") > NAME_MAX) return "name-too-long";
  return null;
}

/**
 * Why a key (relative to some prefix) is unusable as a relative path, or null when usable.
 * A single trailing "/" (directory marker) is allowed.
 */
export function keyProblem(rel: string): KeyProblem | null {
  if (rel === "") return "empty";
  const body = rel.endsWith("/") ? rel.slice(0, -1) : rel;
  if (body === "") return "empty-segment";
  if (Buffer.byteLength(body, "utf8") > REL_PATH_MAX) return "path-too-long";
  for (const seg of body.split("/")) {
    const p = nameProblem(seg);
    if (p) return p;
  }
  return null;
}

export function describeProblem(p: KeyProblem): string {
  switch (p) {
    case "empty":
      return "empty key";
    case "empty-segment":
      return "empty path segment (leading '/' or '//')";
    case "dot-segment":
      return "'.' or '..' segment";
    case "nul":
      return "NUL byte";
    case "name-too-long":
      return `a name longer than ${NAME_MAX} bytes`;
    case "path-too-long":
      return `longer than ${REL_PATH_MAX} bytes`;
  }
}

/**
 * Join a relative path (already checked with keyProblem) onto root, and verify the result is
 * strictly inside root. Throws when it is not: that would be a bug upstream, never allowed.
 */
export function containedPath(root: string, rel: string): string {
  const p = keyProblem(rel);
  if (p) throw new Error(`refusing unsafe path ${JSON.stringify(rel)}: ${describeProblem(p)}`);
  const absRoot = resolve(root);
  const full = resolve(absRoot, rel.endsWith("/") ? rel.slice(0, -1) : rel);
  if (!full.startsWith(absRoot + sep)) throw new Error(`refusing path outside ${absRoot}: ${JSON.stringify(rel)}`);
  return full;
}
