/**
 * Inode numbers for bucket-relative paths, with the kernel's lookup counts.
 *
 * Is: a two-way map path <-> ino. Numbers are never reused (a monotonic counter), so the
 * generation is always 0. A node lives while the kernel holds references to it (lookup and
 * readdirplus add one, forget drops n); the root (ino 1) lives forever. Is not: metadata.
 */

export const ROOT_INO = 1;

export interface Inode {
  ino: number;
  /** "" for the root, "a/b" below it. */
  path: string;
  nlookup: number;
}

export class InodeTable {
  private byIno = new Map<number, Inode>();
  private byPath = new Map<string, Inode>();
  private next = ROOT_INO + 1;

  constructor() {
    const root: Inode = { ino: ROOT_INO, path: "", nlookup: 1 };
    this.byIno.set(ROOT_INO, root);
    this.byPath.set("", root);
  }

  get(ino: number): Inode | undefined {
    return this.byIno.get(ino);
  }

  /** The node for `path`, created (with no references) when new. */
  ensure(path: string): Inode {
    let n = this.byPath.get(path);
    if (!n) {
      n = { ino: this.next++, path, nlookup: 0 };
      this.byIno.set(n.ino, n);
      this.byPath.set(path, n);
    }
    return n;
  }

  ref(ino: number): void {
    const n = this.byIno.get(ino);
    if (n) n.nlookup++;
  }

  forget(ino: number, count: number): void {
    const n = this.byIno.get(ino);
    if (!n || ino === ROOT_INO) return;
    n.nlookup -= count;
    if (n.nlookup <= 0) {
      this.byIno.delete(ino);
      if (this.byPath.get(n.path) === n) this.byPath.delete(n.path);
    }
  }
}
