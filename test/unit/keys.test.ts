import { describe, expect, test } from "bun:test";
import { containedPath, keyProblem, nameProblem, NAME_MAX } from "../../src/cache/keys.ts";

describe("key safety", () => {
  test("ordinary keys and directory markers are usable", () => {
    for (const k of ["a", "a/b/c.txt", "dir/", "résumé/ünïcode.txt", "x".repeat(NAME_MAX)]) expect(keyProblem(k)).toBeNull();
  });

  test("hostile keys are refused with the reason", () => {
    expect(keyProblem("")).toBe("empty");
    expect(keyProblem("/abs")).toBe("empty-segment");
    expect(keyProblem("a//b")).toBe("empty-segment");
    expect(keyProblem("/")).toBe("empty-segment");
    expect(keyProblem("..")).toBe("dot-segment");
    expect(keyProblem("a/../../etc/passwd")).toBe("dot-segment");
    expect(keyProblem("./x")).toBe("dot-segment");
    expect(keyProblem("a/\0b")).toBe("nul");
    expect(keyProblem("x".repeat(NAME_MAX + 1))).toBe("name-too-long");
    // 255 bytes is the limit in bytes, not characters: 128 two-byte characters is too long.
    expect(nameProblem("é".repeat(128))).toBe("name-too-long");
    expect(keyProblem(Array.from({ length: 40 }, () => "y".repeat(100)).join("/"))).toBe("path-too-long");
  });

  test("containedPath stays below the root or throws", () => {
    expect(containedPath("/cache/.b", "a/b")).toBe("/cache/.b/a/b");
    expect(containedPath("/cache/.b/", "dir/")).toBe("/cache/.b/dir");
    for (const bad of ["../x", "a/../../x", "/etc/passwd", "a//b", ""]) {
      expect(() => containedPath("/cache/.b", bad)).toThrow(/refusing/);
    }
  });
});
