/** The one mtime rule (src/store/meta.ts): namespace mtimes are whole seconds of Last-Modified. */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { objectMode, objectMtimeMs, storedMtimeS } from "../../src/store/meta.ts";

describe("object mtimes", () => {
  test("the namespace mtime is Last-Modified truncated to the second, metadata or not", () => {
    expect(objectMtimeMs({ lastModifiedMs: 1_764_464_123_999 })).toBe(1_764_464_123_000);
    expect(objectMtimeMs({ lastModifiedMs: 1_764_464_123_000 })).toBe(1_764_464_123_000);
    // A listing (ms) and a HEAD (whole seconds) of one version agree.
    expect(objectMtimeMs({ lastModifiedMs: 1_764_464_123_225 })).toBe(objectMtimeMs({ lastModifiedMs: 1_764_464_123_000 }));
  });

  test("the restored mtime prefers valid x-amz-meta-mtime, else the namespace mtime", () => {
    expect(storedMtimeS({ lastModifiedMs: 1_764_464_123_225, meta: { mtime: "1600000000.5" } })).toBeCloseTo(1_600_000_000.5000005, 6);
    expect(storedMtimeS({ lastModifiedMs: 1_764_464_123_225, meta: { mtime: "1600000000" } })).toBe(1_600_000_000);
    expect(storedMtimeS({ lastModifiedMs: 1_764_464_123_225, meta: { mtime: "soon" } })).toBe(1_764_464_123);
    expect(storedMtimeS({ lastModifiedMs: 1_764_464_123_225, meta: { mtime: "0" } })).toBe(1_764_464_123);
    expect(storedMtimeS({ lastModifiedMs: 1_764_464_123_225 })).toBe(1_764_464_123);
  });

  test("a restored mtime keeps the metadata's exact microsecond (and millisecond) through utimes", () => {
    const dir = mkdtempSync(join(tmpdir(), "meta-mtime-"));
    const p = join(dir, "f");
    try {
      writeFileSync(p, "x");
      const cases = ["1764464123.123000000", "1764464123.999999000", "1764464123.000000000", "1764464123.123456789", "1796004019.974999999"];
      for (const raw of cases) {
        const when = storedMtimeS({ lastModifiedMs: 0, meta: { mtime: raw } });
        utimesSync(p, when, when);
        const got = statSync(p, { bigint: true }).mtimeNs;
        const [s, f] = raw.split(".") as [string, string];
        const want = BigInt(s) * 1_000_000_000n + BigInt(f);
        expect({ raw, micros: got / 1000n }).toEqual({ raw, micros: want / 1000n });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("mode: decimal, leading-zero octal, invalid", () => {
    expect(objectMode({ meta: { mode: "33188" } })).toBe(0o644);
    expect(objectMode({ meta: { mode: "0755" } })).toBe(0o755);
    expect(objectMode({ meta: { mode: "rwx" } })).toBeNull();
  });
});
