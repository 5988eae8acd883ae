/**
 * The little XML S3 answers need: one value, the blocks of one element, entity decoding, and
 * escaping for the one XML body we send (CompleteMultipartUpload).
 * Is: string scanning of S3's flat, namespace-free answers. Is not: a general XML parser.
 */

/** The value of `<tag>` in an XML answer (entities decoded), or undefined. */
export function xmlValue(xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml);
  return m ? xmlText(m[1] ?? "") : undefined;
}

/** Every `<tag>...</tag>` block of an XML answer. */
export function xmlBlocks(xml: string, tag: string): string[] {
  const out: string[] = [];
  const open = `<${tag}>`;
  const close = `</${tag}>`;
  for (let i = xml.indexOf(open); i >= 0; i = xml.indexOf(open, i)) {
    const j = xml.indexOf(close, i);
    if (j < 0) break;
    out.push(xml.slice(i + open.length, j));
    i = j + close.length;
  }
  return out;
}

export function xmlText(s: string): string {
  return s.replace(/&(quot|amp|lt|gt|apos|#x[0-9a-fA-F]+|#\d+);/g, (_, e: string) => {
    switch (e) {
      case "quot": return '"';
      case "amp": return "&";
      case "lt": return "<";
      case "gt": return ">";
      case "apos": return "'";
      default: return String.fromCodePoint(e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    }
  });
}

export function xmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

