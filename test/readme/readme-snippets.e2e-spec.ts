import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

/**
 * Every ```ts block of README.md is a complete module that type-checks as a user would write it:
 * imports from the public entry points (`nestjs-idempotency`, `nestjs-idempotency/redis`, ...,
 * mapped to the sources by the `paths` of tsconfig.json), no placeholders. Each block is written
 * to its own file in a temporary directory at the repository's root (git-ignored, outside the
 * roots of jest, tsconfig and eslint), so that module resolution finds node_modules and those
 * `paths`, and all of them are checked in one TypeScript program with the compiler options of
 * tsconfig.json. Each file is a module of its own, so names never clash. A block whose first line
 * names a file (`// my-store.ts`) is written under that name, so another block can import it
 * (`import { MyStore } from './my-store'`); the others are `snippet-NN.ts`.
 */

// npm test runs from the repository's root (jest's rootDir).
const ROOT = process.cwd();
const README = join(ROOT, 'README.md');

interface Snippet {
  /** README line (1-based) of the opening fence. */
  line: number;
  code: string;
  /** The file it is written to: the one its first line names, or `snippet-NN.ts`. */
  file: string;
  /** `README.md:<line> <first statement that is not an import>`, the test's name. */
  name: string;
}

/** The test's name: the first line of the first statement that is not an import. */
function titleOf(code: string): string {
  const source = ts.createSourceFile('snippet.ts', code, ts.ScriptTarget.Latest);
  const statement =
    source.statements.find((node) => !ts.isImportDeclaration(node)) ?? source.statements[0];
  const text = statement ? code.slice(statement.getStart(source)) : code;
  return text
    .trim()
    .split('\n')[0]
    .replace(/\s+\/\/ .*$/, '')
    .trim();
}

function extractSnippets(markdown: string): Snippet[] {
  const lines = markdown.split(/\r?\n/);
  const snippets: Snippet[] = [];
  for (let open = 0; open < lines.length; open++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[open])) continue;
    const close = lines.findIndex((text, index) => index > open && /^```\s*$/.test(text));
    if (close < 0) throw new Error(`README.md:${open + 1}: the code block is never closed`);
    const code = `${lines.slice(open + 1, close).join('\n')}\n`;
    const named = /^\/\/ ([\w.-]+\.ts)\s*$/.exec(lines[open + 1] ?? '')?.[1];
    const file = named ?? `snippet-${String(snippets.length + 1).padStart(2, '0')}.ts`;
    const clash = snippets.find((snippet) => snippet.file === file);
    if (clash) throw new Error(`README.md:${open + 1}: ${file} is already README.md:${clash.line}`);
    snippets.push({ line: open + 1, code, file, name: `README.md:${open + 1} ${titleOf(code)}` });
    open = close;
  }
  return snippets;
}

/** The compiler options of tsconfig.json, without any output. */
function compilerOptions(): ts.CompilerOptions {
  const file = join(ROOT, 'tsconfig.json');
  const { config, error } = ts.readConfigFile(file, ts.sys.readFile);
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, ROOT, undefined, file);
  if (parsed.errors.length > 0) {
    throw new Error(ts.formatDiagnostics(parsed.errors, formatHost));
  }
  return {
    ...parsed.options,
    noEmit: true,
    declaration: false,
    sourceMap: false,
    incremental: false,
    // A snippet is a module even if it had no import or export: names never clash across snippets.
    moduleDetection: ts.ModuleDetectionKind.Force,
  };
}

const formatHost: ts.FormatDiagnosticsHost = {
  getCanonicalFileName: (fileName) => fileName,
  getCurrentDirectory: () => ROOT,
  getNewLine: () => '\n',
};

/** One diagnostic of a snippet, located in README.md. */
function describeDiagnostic(snippet: Snippet, diagnostic: ts.Diagnostic): string {
  const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
  if (!diagnostic.file || diagnostic.start === undefined) return `TS${diagnostic.code}: ${message}`;
  const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
  return `README.md:${snippet.line + 1 + line}:${character + 1} TS${diagnostic.code}: ${message}`;
}

const snippets = extractSnippets(readFileSync(README, 'utf8'));
const diagnostics = new Map<Snippet, string[]>();
let dir: string | undefined;

beforeAll(() => {
  // Inside the repository (git-ignored), so node_modules and the tsconfig `paths` resolve.
  dir = mkdtempSync(join(ROOT, '.readme-snippets-'));
  const files = new Map<string, Snippet>();
  for (const snippet of snippets) {
    const file = join(dir, snippet.file);
    writeFileSync(file, snippet.code);
    files.set(file, snippet);
  }

  const program = ts.createProgram([...files.keys()], compilerOptions());
  const general = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()];
  if (general.length > 0) throw new Error(ts.formatDiagnostics(general, formatHost));
  for (const [file, snippet] of files) {
    const source = program.getSourceFile(file);
    if (!source) throw new Error(`${snippet.name}: not in the program`);
    const found = [
      ...program.getSyntacticDiagnostics(source),
      ...program.getSemanticDiagnostics(source),
    ];
    diagnostics.set(
      snippet,
      found.map((diagnostic) => describeDiagnostic(snippet, diagnostic)),
    );
  }
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('README.md snippets', () => {
  it.each(snippets.map((snippet) => [snippet.name, snippet] as const))(
    '%s compiles',
    (_name, snippet) => {
      expect(diagnostics.get(snippet)).toEqual([]);
    },
  );
});

describe('README.md prose', () => {
  it('has no stray HTML comment marker outside code blocks (a left-over note would show on npm)', () => {
    const stray: string[] = [];
    let fenced = false;
    let open: number | undefined;
    readFileSync(README, 'utf8')
      .split(/\r?\n/)
      .forEach((text, index) => {
        if (/^```/.test(text)) fenced = !fenced;
        if (fenced) return;
        for (const [marker] of text.matchAll(/<!--|-->/g)) {
          if (marker === '<!--' && open === undefined) open = index + 1;
          else if (marker === '-->' && open !== undefined) open = undefined;
          else stray.push(`README.md:${index + 1} ${marker}`);
        }
      });
    if (open !== undefined) stray.push(`README.md:${open} <!-- never closed`);
    expect(stray).toEqual([]);
  });
});
