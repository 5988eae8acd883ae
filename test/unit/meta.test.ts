/** The one mtime rule (src/store/meta.ts): namespace mtimes are whole seconds of Last-Modified. */
import { describe, expect, test } from "bun:test";
import { objectMode, objectMtimeMs, storedMtimeMs } from "../../src/store/meta.ts";

describe("object mtimes", () => {
  test("the namespace mtime is Last-Modified truncated to the second, metadata or not", () => {
    expect(objectMtimeMs({ lastModifiedMs: 1_764_464_123_999 })).toBe(1_764_464_123_000);
    expect(objectMtimeMs({ lastModifiedMs: 1_764_464_123_000 })).toBe(1_764_464_123_000);
    // A listing (ms) and a HEAD (whole seconds) of one version agree.
    expect(objectMtimeMs({ lastModifiedMs: 1_764_464_123_225 })).toBe(objectMtimeMs({ lastModifiedMs: 1_764_464_123_000 }));
  });

  test("the restored mtime prefers valid x-amz-meta-mtime, else the namespace mtime", () => {
    expect(storedMtimeMs({ lastModifiedMs: 1_764_464_123_225, meta: { mtime: "1600000000.5" } })).toBe(1_600_000_000_500);
    expect(storedMtimeMs({ lastModifiedMs: 1_764_464_123_225, meta: { mtime: "soon" } })).toBe(1_764_464_123_000);
    expect(storedMtimeMs({ lastModifiedMs: 1_764_464_123_225, meta: { mtime: "0" } })).toBe(1_764_464_123_000);
    expect(storedMtimeMs({ lastModifiedMs: 1_764_464_123_225 })).toBe(1_764_464_123_000);
  });

  test("mode: decimal, leading-zero octal, invalid", () => {
    expect(objectMode({ meta: { mode: "33188" } })).toBe(0o644);
    expect(objectMode({ meta: { mode: "0755" } })).toBe(0o755);
    expect(objectMode({ meta: { mode: "rwx" } })).toBeNull();
  });
});
