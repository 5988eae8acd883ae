import { describe, expect, test } from "bun:test";
import { LocalNames, QUOTE, decodeName, encodeName, isUtf8, keyTooLong } from "../../src/service/workdir/names.ts";

const b = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "utf8") : Buffer.from(p))));

describe("name mapping", () => {
  test("valid UTF-8 names (newlines, quotes, emoji) are their own keys", () => {
    for (const n of ["plain.txt", "with\nnewline", `has ${QUOTE}FF already`, "ü€😀", "\x01ctl"]) {
      expect(encodeName(Buffer.from(n, "utf8"))).toEqual({ name: n, mapped: false });
    }
  });

  test("invalid bytes become ‛XX, a literal ‛ in such a name ‛‛; decoding gives the bytes back", () => {
    const raw = b("a", [0xff], ".txt");
    expect(encodeName(raw)).toEqual({ name: `a${QUOTE}FF.txt`, mapped: true });
    const tricky = b([0xc3], QUOTE, "x", [0xe2, 0x82], "ü", [0xed, 0xa0, 0x80], [0xf0, 0x82, 0x82, 0xac]);
    const { name, mapped } = encodeName(tricky);
    expect(mapped).toBe(true);
    expect(isUtf8(Buffer.from(name, "utf8"))).toBe(true);
    expect(name.startsWith(`${QUOTE}C3${QUOTE}${QUOTE}x${QUOTE}E2${QUOTE}82ü${QUOTE}ED`)).toBe(true);
    expect(decodeName(name).equals(tricky)).toBe(true);
  });

  test("isUtf8 agrees with a fatal TextDecoder", () => {
    const dec = new TextDecoder("utf-8", { fatal: true });
    const ok = (x: Uint8Array) => {
      try {
        dec.decode(x);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 2000; i++) {
      const x = new Uint8Array(1 + (i % 7));
      for (let j = 0; j < x.length; j++) x[j] = (i * 2654435761 + j * 40503) & 0xff;
      expect(isUtf8(x)).toBe(ok(x));
    }
  });

  test("S3's key limit is 1,024 bytes", () => {
    expect(keyTooLong("k".repeat(1024))).toBeNull();
    expect(keyTooLong("k".repeat(1025))).toContain("1025 bytes");
  });

  test("LocalNames restores the bytes of mapped paths and of everything under a mapped directory; bad entries are ignored", () => {
    const dir = b("d", [0xfe]);
    const file = b("f", [0xff]);
    const names = new LocalNames([
      { path: `d${QUOTE}FE/f${QUOTE}FF`, raw: Buffer.concat([dir, b("/"), file]).toString("base64") },
      { path: "evil", raw: b("..").toString("base64") }, // not the encoding of its path
      { path: `x${QUOTE}FF`, raw: b("../x").toString("base64") }, // segment count differs
    ]);
    expect((names.local(`d${QUOTE}FE/f${QUOTE}FF`) as Buffer).equals(Buffer.concat([dir, b("/"), file]))).toBe(true);
    expect((names.local(`d${QUOTE}FE/plain`) as Buffer).equals(Buffer.concat([dir, b("/plain")]))).toBe(true);
    expect((names.local(`d${QUOTE}FE`) as Buffer).equals(dir)).toBe(true);
    expect(names.local("plain/file")).toBe("plain/file");
    expect(names.local("evil")).toBe("evil");
    expect((names.join("/root", `d${QUOTE}FE`) as Buffer).equals(Buffer.concat([b("/root/"), dir]))).toBe(true);
  });
});
