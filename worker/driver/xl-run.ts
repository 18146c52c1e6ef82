/**
 * Runs `xl` (and xenstore tools): every call has a timeout (SIGKILL when it
 * passes) and a failure is an XlError naming the command, the exit status and
 * the tail of xl's stderr, never a hang or a bare exit code.
 */
import { execFile } from 'node:child_process';

export class XlError extends Error {
  constructor(
    readonly args: string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly timedOut: boolean,
    message: string,
  ) {
    super(message);
    this.name = 'XlError';
  }
}

export interface XlResult {
  stdout: string;
  stderr: string;
  ms: number;
}

const MAX_OUTPUT = 16 * 1024 * 1024;

/** Last lines of a tool's stderr, as one line, for error messages. */
export function stderrTail(stderr: string, max = 800): string {
  const t = stderr.trim().split('\n').filter((l) => l.trim() !== '').join(' | ');
  // The first line usually says what is wrong (xl's own message), the last ones where it ended.
  return t.length > max ? `${t.slice(0, max / 2)} … ${t.slice(-max / 2)}` : t;
}

export function runTool(binary: string, args: string[], timeoutMs: number): Promise<XlResult> {
  const t0 = performance.now();
  const what = `${binary} ${args.join(' ')}`;
  return new Promise((resolve, reject) => {
    execFile(
      binary,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const ms = performance.now() - t0;
        if (!err) return resolve({ stdout, stderr, ms });
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string; signal?: string };
        if (e.code === 'ENOENT') {
          return reject(new XlError(args, null, '', false, `${binary} not found: is this a Xen dom0 with xen-utils installed?`));
        }
        const timedOut = e.killed === true && e.signal === 'SIGKILL';
        const exitCode = typeof e.code === 'number' ? e.code : null;
        const tail = stderrTail(stderr || stdout);
        reject(
          new XlError(
            args,
            exitCode,
            stderr,
            timedOut,
            timedOut
              ? `\`${what}\` did not finish within ${timeoutMs} ms (killed)`
              : `\`${what}\` failed (exit ${exitCode ?? e.signal ?? '?'})${tail ? `: ${tail}` : ''}`,
          ),
        );
      },
    );
  });
}
