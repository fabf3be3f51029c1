/**
 * Size figures of a source tree, for before/after notes: files, lines, functions and how many are over
 * 80 and 120 lines (TypeScript's own parser: function declarations, methods, arrow functions and
 * function expressions, each counted on its own, nested ones too).
 *
 *   node --import tsx bench/code-size.ts [DIR]      (default: src)
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import ts from "typescript";

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out.sort();
}

export interface Size {
  files: number;
  lines: number;
  functions: number;
  over80: { name: string; lines: number }[];
  over120: { name: string; lines: number }[];
}

export function measure(dir: string): Size {
  const size: Size = { files: 0, lines: 0, functions: 0, over80: [], over120: [] };
  for (const f of files(dir)) {
    const text = readFileSync(f, "utf8");
    size.files++;
    size.lines += text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
    const sf = ts.createSourceFile(f, text, ts.ScriptTarget.Latest, true);
    const visit = (n: ts.Node): void => {
      if (ts.isFunctionLike(n) && "body" in n && n.body) {
        size.functions++;
        const start = sf.getLineAndCharacterOfPosition(n.getStart(sf)).line;
        const end = sf.getLineAndCharacterOfPosition(n.getEnd()).line;
        const lines = end - start + 1;
        const nameNode = (n as { name?: ts.Node }).name;
        const name = `${relative(dir, f)}:${start + 1} ${nameNode ? nameNode.getText(sf) : "(anonymous)"}`;
        if (lines > 80) size.over80.push({ name, lines });
        if (lines > 120) size.over120.push({ name, lines });
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  size.over80.sort((a, b) => b.lines - a.lines);
  size.over120.sort((a, b) => b.lines - a.lines);
  return size;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2] ?? "src";
  const s = measure(dir);
  let text = `${dir}: ${s.files} files, ${s.lines} lines, ${s.functions} functions, ${s.over80.length} over 80 lines, ${s.over120.length} over 120\n`;
  for (const f of s.over80) text += `  ${f.lines.toString().padStart(4)}  ${f.name}\n`;
  process.stdout.on("error", () => {}); // piped into head
  process.stdout.write(text);
}
