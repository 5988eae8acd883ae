/**
 * A small strict INI parser for `bucketfs.conf`.
 *
 * Is: syntax only. `[section]` headers (taken verbatim, dots allowed), `key = value` split at the
 * first `=`, full-line `#`/`;` comments, and line numbers for every section and key.
 * Is not: a general INI reader (no inline comments, no escapes, no arrays, no nesting, no merging
 * of repeated keys or sections: those are errors) and not validation of keys or values (`load.ts`).
 * Error messages never echo a line's text, because a malformed line may hold a secret.
 */
import { controlProblem } from "./keys.ts";

/** Thrown for any problem in the config file; `load.ts` re-exports it as the public error. */
export class ConfigError extends Error {
  override name = "ConfigError";
  readonly file: string;
  readonly line?: number;
  readonly key?: string;

  /** Message: `<file>:<line>: key "<key>": <problem>`; line and key appear only when known. */
  constructor(file: string, problem: string, where: { line?: number; key?: string } = {}) {
    const at = where.line !== undefined ? `${file}:${where.line}` : file;
    super(`${at}: ${where.key !== undefined ? `key "${where.key}": ` : ""}${problem}`);
    this.file = file;
    if (where.line !== undefined) this.line = where.line;
    if (where.key !== undefined) this.key = where.key;
  }
}

export interface IniEntry {
  value: string;
  line: number;
}

export interface IniSection {
  name: string;
  /** Line of the `[name]` header. */
  line: number;
  /** Keys are lower-cased; a Map so that names like `__proto__` are just data. */
  entries: Map<string, IniEntry>;
}

// At most 32 characters: a longer "key" is more likely a pasted secret (AWS secrets are 40) than a typo.
const KEY_RE = /^[a-z0-9_-]{1,32}$/;

/** Parse INI text into sections in file order. Throws ConfigError on any syntax problem. */
export function parseIni(text: string, file: string): IniSection[] {
  const sections: IniSection[] = [];
  const byName = new Map<string, IniSection>();
  let current: IniSection | undefined;

  text
    .replace(/^\uFEFF/, "")
    .split(/\r?\n/)
    .forEach((raw, i) => {
      const line = i + 1;
      const s = raw.trim();
      if (s === "" || s.startsWith("#") || s.startsWith(";")) return;

      if (s.startsWith("[")) {
        if (!s.endsWith("]")) throw new ConfigError(file, "section header must look like [name]", { line });
        const name = s.slice(1, -1).trim();
        if (name === "") throw new ConfigError(file, "empty section name; write [name]", { line });
        const bad = controlProblem(name);
        if (bad) throw new ConfigError(file, `section name ${bad}`, { line });
        const prev = byName.get(name);
        if (prev) {
          throw new ConfigError(file, `duplicate section [${name}] (first on line ${prev.line}); merge or rename one`, {
            line,
          });
        }
        current = { name, line, entries: new Map() };
        sections.push(current);
        byName.set(name, current);
        return;
      }

      const eq = s.indexOf("=");
      if (eq < 0) {
        throw new ConfigError(file, "not a comment, [section] or key = value line (inline text is not allowed)", {
          line,
        });
      }
      const key = s.slice(0, eq).trim().toLowerCase();
      if (key === "") throw new ConfigError(file, "empty key before '='", { line });
      // An odd key is most likely a mangled line; do not echo it (it may be part of a secret).
      if (!KEY_RE.test(key)) throw new ConfigError(file, "invalid key name (use letters, digits, '_' or '-')", { line });
      if (!current) {
        throw new ConfigError(file, "key outside any section; put it below a [section] header", { line, key });
      }
      const prev = current.entries.get(key);
      if (prev) {
        throw new ConfigError(
          file,
          `duplicate key in section [${current.name}] (first on line ${prev.line}); keep only one`,
          { line, key },
        );
      }
      current.entries.set(key, { value: unquote(s.slice(eq + 1).trim()), line });
    });

  return sections;
}

/** Remove one pair of matching surrounding quotes; anything else is kept literally. */
function unquote(v: string): string {
  const q = v[0];
  return v.length >= 2 && (q === '"' || q === "'") && v.endsWith(q) ? v.slice(1, -1) : v;
}
