/**
 * Read-ahead across files: a reader that opens a directory's files one after another in listing
 * order (`cat dir/*`, a tool going through its inputs, a pipeline step reading a folder of
 * shards) gets the next small objects fetched while it works on the current one, so its opens
 * stop waiting a GET round trip each.
 *
 * Is: per directory (the last MAX_DIRS used), the last name opened and how far ahead fetches
 * were started; an open of the file that follows the previous open in listing order starts
 * fetches of the next `window` files. Any other open only moves the position: one random open
 * never fetches anything it did not ask for. Is not: the fetching (cache/object-cache.ts
 * `prefetch`: single flight with opens, bounded, small objects only) or read-ahead inside one
 * file (cache/partial-object.ts).
 */
import type { IndexEntry } from "../cache/meta-index.ts";

export interface DirReadAheadDeps {
  /** Up to `limit` entries of `dir` after `name`, in listing order, from the index (no request). */
  after(dir: string, name: string, limit: number): IndexEntry[];
  /** Start fetching `e` (a file) unless it is cached or on its way. */
  prefetch(e: IndexEntry): void;
}

/** Files fetched ahead of an in-order reader. */
const WINDOW = 16;
/** Directories whose position is remembered. */
const MAX_DIRS = 64;
/** Entries looked at to find the file after the previous open (directories in between are skipped). */
const NEXT_SCAN = 8;

export class DirReadAhead {
  /** Insertion order is recency: the first key is the least recently used directory. */
  private dirs = new Map<string, { last: string; ahead: string }>();

  constructor(private deps: DirReadAheadDeps, readonly window = WINDOW) {}

  /** `name` in `dir` was opened. */
  opened(dir: string, name: string): void {
    if (this.window <= 0) return;
    const prev = this.dirs.get(dir);
    this.dirs.delete(dir);
    const inOrder = prev !== undefined && this.deps.after(dir, prev.last, NEXT_SCAN).find((e) => !e.isDir)?.name === name;
    const cur = { last: name, ahead: inOrder ? prev.ahead : "" };
    this.dirs.set(dir, cur);
    if (this.dirs.size > MAX_DIRS) this.dirs.delete(this.dirs.keys().next().value!);
    if (!inOrder) return;
    for (const e of this.deps.after(dir, name, this.window)) {
      if (e.isDir || e.name <= cur.ahead) continue;
      this.deps.prefetch(e);
      cur.ahead = e.name;
    }
  }
}
