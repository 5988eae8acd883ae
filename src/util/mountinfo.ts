/**
 * Reads /proc/self/mountinfo: which paths are mount points, of what type, with which device.
 *
 * Is: a parser and lookups. Is not: a way to stat a mount point. Never `stat` a bucketfs
 * mount from the daemon's own JS thread: the thread that would answer is the one blocked.
 */
import { readFileSync } from "node:fs";

export interface MountEntry {
  id: number;
  parentId: number;
  /** "major:minor" of the mounted device. */
  dev: string;
  root: string;
  mountpoint: string;
  options: string;
  fstype: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const [left, right] = line.split(" - ");
    if (!left || !right) continue;
    const f = left.split(" ");
    const r = right.split(" ");
    out.push({
      id: Number(f[0]),
      parentId: Number(f[1]),
      dev: f[2] ?? "",
      root: unescape(f[3] ?? ""),
      mountpoint: unescape(f[4] ?? ""),
      options: f[5] ?? "",
      fstype: r[0] ?? "",
      source: unescape(r[1] ?? ""),
    });
  }
  return out;
}

export function readMounts(): MountEntry[] {
  return parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8"));
}

/** Every mount at `path` or below it, deepest first (the order to unmount them in). */
export function mountsUnder(path: string, mounts = readMounts()): MountEntry[] {
  const p = path.replace(/\/+$/, "") || "/";
  return mounts
    .filter((m) => m.mountpoint === p || m.mountpoint.startsWith(p + "/"))
    .sort((a, b) => b.mountpoint.length - a.mountpoint.length || b.id - a.id);
}

/** The topmost mount exactly at `path`, if any. */
export function mountAt(path: string, mounts = readMounts()): MountEntry | undefined {
  const p = path.replace(/\/+$/, "") || "/";
  const at = mounts.filter((m) => m.mountpoint === p);
  return at[at.length - 1];
}
