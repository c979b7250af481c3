// JSON as the server writes it.

/**
 * The server writes 64-bit integers as JSON numbers (its serde encoding),
 * which JSON.parse would round past 2^53 (a wave's seed is a full u64):
 * every integer token longer than 15 digits, outside strings, is quoted, as
 * proto3 JSON writes them, so it arrives exact.
 */
export function quoteBigIntegers(json: string): string {
  let out = "";
  let i = 0;
  while (i < json.length) {
    const c = json[i];
    if (c === '"') {
      // A string: copied as it is, escapes included.
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === "\\" ? 2 : 1;
      out += json.slice(i, j + 1);
      i = j + 1;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      let j = i + 1;
      while (j < json.length && /[0-9.eE+-]/.test(json[j])) j++;
      const token = json.slice(i, j);
      out += /^-?\d{16,}$/.test(token) ? `"${token}"` : token;
      i = j;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}
