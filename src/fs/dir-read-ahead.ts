/**
 * Read-ahead across files: a reader that opens a directory's files one after another in listing
 * order (`cat dir/*`, a tool going through its inputs, a pipeline step reading a folder of
 * shards) gets the next small objects fetched while it works on the current one, so its opens
 * stop waiting a GET round trip each.
 *
 * Is: per directory (the last MAX_DIRS used), up to MAX_STREAMS readers' positions (`xargs -P 8`
 * runs eight in-order readers through one directory): each the last name opened, the files that
 * follow it (read from the index once per stream and refilled in batches, so an in-order open
 * costs no query) and how far ahead fetches were started. An open of the file that follows a
 * stream's last open in listing order moves that stream and starts fetches of the next `window`
 * files, unless `busy()` says opens are already waiting for fetches (then the readers keep the
 * fetches busy themselves, and read-ahead would only take the slots they wait for). Any other
 * open starts a new stream (the least recently moved is forgotten): one random open never
 * fetches anything it did not ask for. Is not: the fetching (cache/object-cache.ts `prefetch`:
 * single flight with opens, bounded, small objects only) or read-ahead inside one file
 * (cache/partial-object.ts).
 */
import type { IndexEntry } from "../cache/meta-index.ts";

export interface DirReadAheadDeps {
  /** Up to `limit` entries of `dir` after `name`, in listing order, from the index (no request). */
  after(dir: string, name: string, limit: number): IndexEntry[];
  /** Start fetching `e` (a file) unless it is cached or on its way. */
  prefetch(e: IndexEntry): void;
  /** Opens are waiting for fetches already: start none ahead of them now. */
  busy?(): boolean;
}

/** Files fetched ahead of an in-order reader. */
const WINDOW = 16;
/** Directories whose positions are remembered. */
const MAX_DIRS = 64;
/** In-order readers followed per directory. */
export const MAX_STREAMS = 8;
/** Entries looked at to find the file after the previous open (directories in between are skipped). */
const NEXT_SCAN = 8;

interface Stream {
  /** The last name opened. */
  last: string;
  /** Files after `last` in listing order, as the index had them ([0] is the next one). */
  next: IndexEntry[];
  /** The last name of `next` looked up (where a refill continues); "" when none. */
  scanned: string;
  /** No more entries after `scanned`. */
  end: boolean;
  /** The last file fetched ahead ("" when none). */
  ahead: string;
}

export class DirReadAhead {
  /** Insertion order is recency: the first key is the least recently used directory. */
  private dirs = new Map<string, Stream[]>();
  /** Index queries made (for tests and the profile: an in-order open costs none). */
  queries = 0;

  constructor(private deps: DirReadAheadDeps, readonly window = WINDOW) {}

  /** `name` in `dir` was opened. */
  opened(dir: string, name: string): void {
    if (this.window <= 0) return;
    let streams = this.dirs.get(dir);
    this.dirs.delete(dir);
    streams ??= [];
    this.dirs.set(dir, streams);
    if (this.dirs.size > MAX_DIRS) this.dirs.delete(this.dirs.keys().next().value!);
    const i = streams.findIndex((s) => s.next[0]?.name === name);
    if (i < 0) {
      // A new reader position: remembered (with what follows it), nothing fetched.
      const same = streams.findIndex((x) => x.last === name);
      if (same >= 0) streams.splice(same, 1);
      const s: Stream = { last: name, next: [], scanned: name, end: false, ahead: "" };
      this.fill(dir, s, NEXT_SCAN);
      streams.push(s);
      if (streams.length > MAX_STREAMS) streams.shift();
      return;
    }
    const s = streams[i]!;
    streams.splice(i, 1);
    streams.push(s); // most recently moved last
    s.next.shift();
    s.last = name;
    if (s.ahead < name) s.ahead = name;
    if (s.next.length < this.window && !s.end) this.fill(dir, s, 2 * this.window);
    if (this.deps.busy?.()) return;
    let n = 0;
    for (const e of s.next) {
      if (++n > this.window) break;
      if (e.name <= s.ahead) continue;
      this.deps.prefetch(e);
      s.ahead = e.name;
    }
  }

  /** Append up to `limit` entries after `s.scanned` to `s.next` (files only). */
  private fill(dir: string, s: Stream, limit: number): void {
    this.queries++;
    const got = this.deps.after(dir, s.scanned, limit);
    if (got.length < limit) s.end = true;
    for (const e of got) if (!e.isDir) s.next.push(e);
    if (got.length > 0) s.scanned = got[got.length - 1]!.name;
  }
}
