/**
 * Workdir file names versus S3 keys: the reversible mapping for names that are not valid S3
 * keys, and the limits no mapping can lift.
 *
 * Is: `encodeName` (one file-name segment, as the bytes Linux gave, to a key segment), its
 * inverse `decodeName`, `keyTooLong` (S3's 1,024-byte key limit), and `LocalNames`, which
 * maps a workdir path as it appears in S3 back to the bytes it has on disk (from the commit
 * record's `names`). Is not: I/O, or a decision about what a name that cannot be uploaded
 * holds back (upload.ts and the `unuploadable_holds_markers` key decide that).
 *
 * The mapping (documented in docs/SEMANTICS.md §4.3, same idea as rclone's encoder): a name
 * that is valid UTF-8 is its own key, unchanged. In a name that is NOT valid UTF-8, each byte
 * that is not part of a valid UTF-8 sequence becomes `‛` (U+201B) followed by its two
 * upper-case hex digits, and a literal `‛` becomes `‛‛`; everything else is kept. So
 * `a\xff.txt` is stored as `a‛FF.txt`. The original bytes of every path that needed this are
 * also written into the commit record (`names`, base64), and prefetch restores them from
 * there, so a key another tool wrote that happens to contain `‛` is never reinterpreted.
 */

/** The quote character of the mapping (U+201B SINGLE HIGH-REVERSED-9 QUOTATION MARK, as rclone). */
export const QUOTE = "\u201b";
/** S3's longest key, in bytes of UTF-8. */
export const S3_KEY_MAX = 1024;

/** Length of the valid UTF-8 sequence starting at `i` (1..4), or 0 when the byte there starts none. */
function utf8SeqLen(b: Uint8Array, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  const cont = (k: number) => i + k < b.length && (b[i + k]! & 0xc0) === 0x80;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    const c1 = b[i + 1]!;
    if (c === 0xe0 && c1 < 0xa0) return 0; // overlong
    if (c === 0xed && c1 >= 0xa0) return 0; // surrogates
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    const c1 = b[i + 1]!;
    if (c === 0xf0 && c1 < 0x90) return 0; // overlong
    if (c === 0xf4 && c1 >= 0x90) return 0; // above U+10FFFF
    return 4;
  }
  return 0;
}

/** Whether the bytes are valid UTF-8. */
export function isUtf8(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; ) {
    const n = utf8SeqLen(b, i);
    if (n === 0) return false;
    i += n;
  }
  return true;
}

/** One name (no "/") as the key segment it is stored under; `mapped` when it needed the mapping. */
export function encodeName(raw: Uint8Array): { name: string; mapped: boolean } {
  if (isUtf8(raw)) return { name: Buffer.from(raw).toString("utf8"), mapped: false };
  let out = "";
  for (let i = 0; i < raw.length; ) {
    const n = utf8SeqLen(raw, i);
    if (n === 0) {
      out += QUOTE + raw[i]!.toString(16).toUpperCase().padStart(2, "0");
      i++;
      continue;
    }
    const ch = Buffer.from(raw.subarray(i, i + n)).toString("utf8");
    out += ch === QUOTE ? QUOTE + QUOTE : ch;
    i += n;
  }
  return { name: out, mapped: true };
}

/** The inverse of `encodeName` for a name that was mapped. */
export function decodeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < name.length; ) {
    if (name[i] === QUOTE) {
      if (name[i + 1] === QUOTE) {
        parts.push(Buffer.from(QUOTE, "utf8"));
        i += 2;
        continue;
      }
      const hex = name.slice(i + 1, i + 3);
      if (/^[0-9A-F]{2}$/.test(hex)) {
        parts.push(Buffer.from([parseInt(hex, 16)]));
        i += 3;
        continue;
      }
    }
    const cp = name.codePointAt(i)!;
    const ch = String.fromCodePoint(cp);
    parts.push(Buffer.from(ch, "utf8"));
    i += ch.length;
  }
  return Buffer.concat(parts);
}

/** Why `key` cannot be an S3 key whatever the mapping, or null. */
export function keyTooLong(key: string): string | null {
  const n = Buffer.byteLength(key, "utf8");
  return n > S3_KEY_MAX ? `its key is ${n} bytes long; S3 keys have at most ${S3_KEY_MAX} bytes` : null;
}

/** One mapped path of the commit record: the path as stored, and its bytes on disk (base64). */
export interface MappedName {
  path: string;
  raw: string;
}

/** A raw segment is a safe single name: not empty, not "." or "..", no "/" and no NUL. */
function safeRawSegment(seg: Buffer): boolean {
  if (seg.length === 0 || seg.includes(0)) return false;
  const s = seg.toString("latin1");
  return s !== "." && s !== "..";
}

/**
 * The local (on-disk) form of workdir paths as stored in S3, from the record's `names`: a path
 * with a mapped component becomes a Buffer of the original bytes (relative), any other path
 * stays as it is. Entries whose bytes do not encode back to their path are ignored (never
 * trusted blindly: the record is read from S3).
 */
export class LocalNames {
  private readonly byPrefix = new Map<string, Buffer>();

  constructor(names: readonly MappedName[] = []) {
    for (const n of names) {
      const raw = Buffer.from(n.raw, "base64");
      const rawSegs: Buffer[] = [];
      let start = 0;
      for (let i = 0; i <= raw.length; i++) {
        if (i === raw.length || raw[i] === 0x2f) {
          rawSegs.push(raw.subarray(start, i));
          start = i + 1;
        }
      }
      const segs = n.path.split("/");
      if (segs.length !== rawSegs.length || !rawSegs.every(safeRawSegment)) continue;
      if (!rawSegs.every((r, i) => encodeName(r).name === segs[i])) continue;
      for (let i = 1; i <= segs.length; i++) {
        if (!rawSegs.slice(0, i).some((r) => encodeName(r).mapped)) continue;
        this.byPrefix.set(segs.slice(0, i).join("/"), Buffer.from(rawSegs.slice(0, i).map((r) => r.toString("latin1")).join("/"), "latin1"));
      }
    }
  }

  get size(): number {
    return this.byPrefix.size;
  }

  /** The relative path on disk: a Buffer when some component has bytes the key cannot carry. */
  local(rel: string): string | Buffer {
    if (this.byPrefix.size === 0) return rel;
    const segs = rel.split("/");
    for (let i = segs.length; i >= 1; i--) {
      const raw = this.byPrefix.get(segs.slice(0, i).join("/"));
      if (raw === undefined) continue;
      const rest = segs.slice(i).join("/");
      return rest === "" ? raw : Buffer.concat([raw, Buffer.from(`/${rest}`, "utf8")]);
    }
    return rel;
  }

  /** `root` joined with the local form of `rel` (the caller checked `rel` with keyProblem). */
  join(root: string, rel: string): string | Buffer {
    const l = this.local(rel);
    return typeof l === "string" ? `${root}/${l}` : Buffer.concat([Buffer.from(`${root}/`, "utf8"), l]);
  }
}
