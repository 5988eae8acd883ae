/**
 * The read-ahead across files (src/fs/dir-read-ahead.ts), on a listing held in memory: which
 * opens start fetches, of which files, and how far ahead. Pure logic: the fetches themselves
 * (single flight with opens, pins, limits) are ObjectCache's, tested in object-cache.test.ts and
 * through a real mount in test/integration/read-path.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { DirReadAhead } from "../../src/fs/dir-read-ahead.ts";
import type { IndexEntry } from "../../src/cache/meta-index.ts";

function setup(names: string[], window = 4, busy = () => false) {
  const entries: IndexEntry[] = names.sort().map((n) => ({
    dir: "d", name: n, isDir: n.startsWith("sub"), size: 10, mtimeMs: 0, etag: `e-${n}`, mode: null,
  }));
  const fetched: string[] = [];
  let queries = 0;
  const ra = new DirReadAhead({
    after: (dir, name, limit) => {
      queries++;
      return dir === "d" ? entries.filter((e) => e.name > name).slice(0, limit) : [];
    },
    prefetch: (e) => void fetched.push(e.name),
    busy,
  }, window);
  return { ra, fetched, queries: () => queries };
}

const files = (n: number) => Array.from({ length: n }, (_, i) => `f${String(i).padStart(3, "0")}`);

describe("read-ahead across files", () => {
  test("one open fetches nothing; the next file in order starts the window; later opens top it up", () => {
    const { ra, fetched } = setup(files(20));
    ra.opened("d", "f000");
    expect(fetched).toEqual([]);
    ra.opened("d", "f001");
    expect(fetched).toEqual(["f002", "f003", "f004", "f005"]);
    ra.opened("d", "f002");
    expect(fetched).toEqual(["f002", "f003", "f004", "f005", "f006"]);
    ra.opened("d", "f003");
    ra.opened("d", "f004");
    expect(fetched.slice(-2)).toEqual(["f007", "f008"]);
    expect(new Set(fetched).size).toBe(fetched.length); // never the same file twice
  });

  test("random opens fetch nothing; a jump restarts the count; directories in between are skipped", () => {
    const { ra, fetched } = setup([...files(10), "f004x-sub", "sub1", "sub2"]);
    for (const n of ["f007", "f002", "f009", "f001", "f005"]) ra.opened("d", n);
    expect(fetched).toEqual([]);
    ra.opened("d", "f006");
    expect(fetched).toEqual(["f007", "f008", "f009"]); // sub1, sub2 are directories: not fetched
    fetched.length = 0;
    ra.opened("d", "f001"); // a jump back
    ra.opened("d", "f002");
    expect(fetched).toEqual(["f003", "f004", "f004x-sub", "f005"]);
  });

  test("directories are tracked apart, the least recently used forgotten; window 0 does nothing", () => {
    const { ra, fetched } = setup(files(5));
    ra.opened("d", "f000");
    for (let i = 0; i < 100; i++) ra.opened(`other${i}`, "x");
    ra.opened("d", "f001"); // "d" was forgotten: this is a first open again
    expect(fetched).toEqual([]);
    const off = setup(files(5), 0);
    off.ra.opened("d", "f000");
    off.ra.opened("d", "f001");
    expect([off.fetched, off.queries()]).toEqual([[], 0]);
  });

  test("parallel in-order readers (xargs -P) are followed apart; in-order opens cost no index query", () => {
    const { ra, fetched, queries } = setup(files(200));
    // Two readers, interleaved: f000.. and f100..
    for (let i = 0; i < 40; i++) {
      ra.opened("d", `f${String(i).padStart(3, "0")}`);
      ra.opened("d", `f${String(100 + i).padStart(3, "0")}`);
    }
    expect(fetched.filter((n) => n < "f100")).toEqual(files(44).slice(2));
    expect(fetched.filter((n) => n >= "f100")).toEqual(files(144).slice(102));
    expect(queries()).toBeLessThanOrEqual(2 + 2 * Math.ceil(40 / 4));
  });

  test("no fetches while busy() says opens are waiting; the position still moves", () => {
    let busy = true;
    const { ra, fetched } = setup(files(20), 4, () => busy);
    for (const n of ["f000", "f001", "f002"]) ra.opened("d", n);
    expect(fetched).toEqual([]);
    busy = false;
    ra.opened("d", "f003");
    expect(fetched).toEqual(["f004", "f005", "f006", "f007"]);
  });
});
