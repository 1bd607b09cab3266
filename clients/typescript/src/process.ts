// Running the binary once: no shell, stdin written and closed, stdout and stderr collected
// (bounded), and a deadline and an AbortSignal that kill the process. A call settles only once
// the process is gone, so no caller ever leaves one behind.
import { spawn, type ChildProcess } from 'node:child_process';

import { AbortError, AgentRelayError, CallTimeoutError, ProtocolError } from './errors.js';

/** After SIGTERM, how long a process may take before SIGKILL. */
export const KILL_GRACE_MS = 1000;
/** Most bytes of stdout read from one call (a `list` of thousands of agents is a few MiB). */
export const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

export interface RunOptions {
  bin: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
  stdin?: string;
  timeoutMs: number;
  signal?: AbortSignal;
}

export interface RunResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** SIGTERM now, SIGKILL after [`KILL_GRACE_MS`] if it still runs; resolves once it is gone. */
export function terminate(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const hard = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
    child.once('close', () => {
      clearTimeout(hard);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Runs the binary to its end (or kills it at the deadline or on abort, then rejects). */
export function run(o: RunOptions): Promise<RunResult> {
  const details = (stderr: string) => ({ kind: null, exitCode: null, stderr, args: o.args });
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) {
      return reject(new AbortError('aborted before it started', details('')));
    }
    const child = spawn(o.bin, o.args, { env: o.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    // Why the process is being killed: the error the call rejects with once it is gone.
    let failed: ((stderr: string) => AgentRelayError) | null = null;
    const stop = (f: (stderr: string) => AgentRelayError) => {
      if (failed) return;
      failed = f;
      void terminate(child);
    };
    const timer = setTimeout(
      () =>
        stop(
          (stderr) =>
            new CallTimeoutError(
              `agent-relay-systemd ${o.args.join(' ')}: no answer within ${o.timeoutMs} ms`,
              details(stderr),
            ),
        ),
      o.timeoutMs,
    );
    const onAbort = () => stop((stderr) => new AbortError('aborted', details(stderr)));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const settled = () => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
    };

    child.stdout!.on('data', (b: Buffer) => {
      outBytes += b.length;
      if (outBytes > MAX_OUTPUT_BYTES) {
        stop((stderr) => new ProtocolError(`answer larger than ${MAX_OUTPUT_BYTES} bytes`, details(stderr)));
      } else {
        out.push(b);
      }
    });
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    // A process that exits before reading its input closes the pipe: not our failure.
    child.stdin!.on('error', () => {});
    child.stdin!.end(o.stdin ?? '');
    child.on('error', (e) => {
      // Could not be started (no such binary, not executable).
      settled();
      reject(new AgentRelayError(`cannot run ${o.bin}: ${e.message}`, details(''), { cause: e }));
    });
    child.on('close', (code) => {
      settled();
      const stderr = Buffer.concat(err).toString();
      if (failed) return reject(failed(stderr));
      resolve({ exitCode: code, stdout: Buffer.concat(out).toString(), stderr });
    });
  });
}
