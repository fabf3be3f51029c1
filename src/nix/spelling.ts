/** Spelling suggestions: an edit distance and the nearest known word. Pure. */

/** Classic Levenshtein distance (insert, delete, substitute all cost 1). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  const prev = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/**
 * The known word nearest to `word`, when it is close enough to be a typo: at most 2 edits (1 for words of
 * up to 4 characters), `_` read as `-`, and a unique best. Null otherwise. Long words are not compared.
 */
export function nearestWord(word: string, known: Iterable<string>): string | null {
  if (word.length > 100) return null;
  const w = word.toLowerCase().replaceAll("_", "-");
  const limit = w.length <= 4 ? 1 : 2;
  let best: string | null = null;
  let bestD = limit + 1;
  let tie = false;
  for (const k of known) {
    if (Math.abs(k.length - w.length) > limit) continue;
    const d = editDistance(w, k);
    if (d < bestD) {
      best = k;
      bestD = d;
      tie = false;
    } else if (d === bestD && k !== best) tie = true;
  }
  return best !== null && bestD <= limit && !tie && best !== word ? best : null;
}
