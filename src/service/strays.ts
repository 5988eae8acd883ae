/**
 * What sits under the mount point while bucketfs is stopped: files a program wrote into the
 * plain directory (e.g. Snakemake still running when bucketfs stopped under it writes
 * `.snakemake/metadata/...` into the now-empty mount point). Mounting would hide them.
 *
 * Is: `listHidden` (what a mount point holds before it is mounted over, for one warning) and
 * `adoptStrays` (move everything at the workdir's path into the workdir cache as local
 * changes, which the next upload sends: refused as a whole, moving nothing, when any entry
 * conflicts with one the cache already has, or when the path there is a symlink). Never
 * follows a symlink; a move across file systems copies (bytes, mode, mtime) and then removes
 * the original.
 * Is not: the mount (bucket-run.ts), or a merge: a conflict is the operator's to resolve.
 */
import {
  chmodSync, copyFileSync, lstatSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmdirSync, symlinkSync, unlinkSync, utimesSync,
} from "node:fs";
import { join } from "node:path";
import { isErrno, lstatBig } from "./workdir/journal.ts";
import { RESERVED_DIR } from "./workdir/lease.ts";

/** Names directly under `dir` (a plain directory, not mounted yet), except `skip`; [] when absent. */
export function listHidden(dir: string, skip?: string): string[] {
  try {
    return readdirSync(dir).filter((n) => n !== skip).sort();
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return [];
    throw err;
  }
}

export interface StrayResult {
  /** Regular files, symlinks and directories moved into the cache (relative paths). */
  moved: string[];
  /** Paths whose place in the cache is taken by something else: nothing was moved. */
  conflicts: string[];
}

/**
 * Moves everything under `from` (the workdir's path under the unmounted mount point) into
 * `to` (the workdir cache dir). Only regular files, symlinks and directories; anything else
 * is a conflict. `.bucketfs` at the top is never adopted (reserved).
 */
export function adoptStrays(from: string, to: string, base?: string): StrayResult {
  const out: StrayResult = { moved: [], conflicts: [] };
  // Never through a symlink: `from` and every directory between `base` (the mount point) and it
  // must be real directories, or nothing is adopted (a link could point at anyone's files).
  const chain = base !== undefined && from.startsWith(`${base}/`) ? from.slice(base.length + 1).split("/") : [];
  let at = base ?? from;
  for (const part of ["", ...chain]) {
    at = part === "" ? at : `${at}/${part}`;
    const st = lstatSync(at, { throwIfNoEntry: false });
    if (st === undefined) return out;
    if (!st.isDirectory()) {
      out.conflicts.push(`${at} is ${st.isSymbolicLink() ? "a symlink" : "not a directory"} (never followed)`);
      return out;
    }
  }
  const plan: { rel: string; kind: "dir" | "file" | "symlink" }[] = [];
  const walk = (rel: string): void => {
    let names: string[];
    try {
      names = readdirSync(rel === "" ? from : join(from, rel));
    } catch (err) {
      if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return;
      throw err;
    }
    for (const name of names.sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      if (rel === "" && name === RESERVED_DIR) {
        out.conflicts.push(`${r} (the name is reserved for bucketfs)`);
        continue;
      }
      const st = lstatSync(join(from, r));
      const there = lstatBig(join(to, r));
      if (st.isDirectory()) {
        if (there !== null && !there.isDirectory()) out.conflicts.push(r);
        else {
          if (there === null) plan.push({ rel: r, kind: "dir" });
          walk(r);
        }
      } else if (st.isFile() || st.isSymbolicLink()) {
        if (there !== null) out.conflicts.push(r);
        else plan.push({ rel: r, kind: st.isFile() ? "file" : "symlink" });
      } else out.conflicts.push(`${r} (not a regular file, symlink or directory)`);
    }
  };
  walk("");
  if (out.conflicts.length > 0) return out;
  for (const p of plan) {
    const src = join(from, p.rel);
    const dst = join(to, p.rel);
    if (p.kind === "dir") mkdirSync(dst, { mode: lstatSync(src).mode & 0o7777 });
    else move(src, dst, p.kind);
    out.moved.push(p.rel);
  }
  // The emptied directories go, deepest first (the workdir's own path stays).
  for (const rel of listDirsUnder(from).reverse()) {
    try {
      rmdirSync(join(from, rel));
    } catch {
      /* not empty: cannot happen after a full move, and harmless */
    }
  }
  return out;
}

function listDirsUnder(root: string, rel = ""): string[] {
  const out: string[] = [];
  for (const name of listHidden(rel === "" ? root : join(root, rel))) {
    const r = rel === "" ? name : `${rel}/${name}`;
    if (lstatSync(join(root, r)).isDirectory()) out.push(r, ...listDirsUnder(root, r));
  }
  return out;
}

function move(src: string, dst: string, kind: "file" | "symlink"): void {
  try {
    renameSync(src, dst);
    return;
  } catch (err) {
    if (!isErrno(err, "EXDEV")) throw err;
  }
  if (kind === "symlink") symlinkSync(readlinkSync(src), dst);
  else {
    const st = lstatSync(src);
    copyFileSync(src, dst);
    chmodSync(dst, st.mode & 0o7777);
    utimesSync(dst, st.atime, st.mtime);
  }
  unlinkSync(src);
}
