// `watch -o json` as an async iterator of typed events. The process runs until the iterator is
// closed (`return()`, a `break` out of `for await`, `close()`, the AbortSignal, or the stream's
// deadline); closing kills it and settles once it is gone. A slow consumer pauses the pipe, and
// the binary then drops events itself and says so with a `lagged` event (`dropped`).
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

import { SCHEMA_VERSION, type ErrorDocument, type WatchEvent } from './contract.js';
import { AbortError, AgentRelayError, CallTimeoutError, ProtocolError, failureOf } from './errors.js';
import { terminate } from './process.js';

/** Events held for a slow consumer before the pipe is paused. */
const HIGH_WATER = 1024;

export interface WatchOptions {
  /** `--queue`: events the binary holds for a slow reader before it drops (and counts) them. */
  queue?: number;
  /** Deadline for the start: the `ready` event (after the snapshot). Default: the client's. */
  readyTimeoutMs?: number;
  /** Deadline for the whole stream; none by default. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface WatchSpawn {
  bin: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
}

type Waiter = { resolve: (r: IteratorResult<WatchEvent>) => void; reject: (e: unknown) => void };

/** A running `watch`. Iterate it once; events before `ready` are the snapshot. */
export class WatchStream implements AsyncIterableIterator<WatchEvent> {
  /** Resolves with the snapshot events and `ready` once the stream is ready; rejects if it
   * ends or fails first. */
  readonly ready: Promise<WatchEvent[]>;
  /** Resolves once the process is gone. */
  readonly closed: Promise<void>;

  private readonly child: ChildProcess;
  private readonly args: readonly string[];
  private readonly queue: WatchEvent[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly preamble: WatchEvent[] = [];
  private stderr = '';
  private errorDoc: ErrorDocument | null = null;
  private failure: AgentRelayError | null = null;
  private ended = false;
  private closing = false;
  private paused = false;
  private timers: NodeJS.Timeout[] = [];
  private readyResolve!: (events: WatchEvent[]) => void;
  private readyReject!: (e: unknown) => void;
  private isReady = false;

  constructor(s: WatchSpawn, o: WatchOptions & { readyTimeoutMs: number }) {
    this.args = s.args;
    this.ready = new Promise((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    // A caller that never awaits `ready` must not see an unhandled rejection.
    this.ready.catch(() => {});
    this.child = spawn(s.bin, s.args, { env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.closed = new Promise((resolve) => this.child.once('close', () => resolve()));
    this.child.stderr!.on('data', (b: Buffer) => {
      // The last lines are enough for a message.
      this.stderr = (this.stderr + b.toString()).slice(-8192);
    });
    this.child.on('error', (e) =>
      this.fail(new AgentRelayError(`cannot run ${s.bin}: ${e.message}`, this.details(null), { cause: e })),
    );
    const lines = createInterface({ input: this.child.stdout!, crlfDelay: Infinity });
    lines.on('line', (line) => this.onLine(line));
    this.child.on('close', (code) => this.onClose(code));

    this.timers.push(
      setTimeout(() => {
        if (!this.isReady) {
          this.fail(new CallTimeoutError(`watch: not ready within ${o.readyTimeoutMs} ms`, this.details(null)));
        }
      }, o.readyTimeoutMs),
    );
    if (o.timeoutMs !== undefined) {
      this.timers.push(
        setTimeout(
          () => this.fail(new CallTimeoutError(`watch: ended at its deadline of ${o.timeoutMs} ms`, this.details(null))),
          o.timeoutMs,
        ),
      );
    }
    if (o.signal) {
      const onAbort = () => this.fail(new AbortError('watch aborted', this.details(null)));
      if (o.signal.aborted) onAbort();
      else o.signal.addEventListener('abort', onAbort, { once: true });
      void this.closed.then(() => o.signal!.removeEventListener('abort', onAbort));
    }
  }

  /** The process id of the `watch` process (undefined if it could not start). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<WatchEvent> {
    return this;
  }

  next(): Promise<IteratorResult<WatchEvent>> {
    const ev = this.queue.shift();
    if (ev) {
      this.resumeIfDrained();
      return Promise.resolve({ value: ev, done: false });
    }
    if (this.failure) {
      // Once: the iteration ends with the error, later calls are done.
      const f = this.failure;
      this.failure = null;
      this.ended = true;
      return Promise.reject(f);
    }
    if (this.ended || this.closing) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Ends the stream: kills the process, and resolves once it is gone. */
  async return(): Promise<IteratorResult<WatchEvent>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /** Kills the process (SIGTERM, then SIGKILL); resolves once it is gone. Pending `next()`
   * calls end (done); a `ready` not reached yet rejects. */
  async close(): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.clearTimers();
      this.readyReject(new AbortError('watch closed before it was ready', this.details(null)));
      this.queue.length = 0;
      for (const w of this.waiters.splice(0)) w.resolve({ value: undefined, done: true });
    }
    await terminate(this.child);
  }

  private details(exitCode: number | null) {
    return { kind: null, exitCode, stderr: this.stderr, args: this.args };
  }

  private onLine(line: string) {
    if (this.closing || line.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      return this.fail(new ProtocolError(`watch printed a line that is not JSON: ${line.slice(0, 200)}`, this.details(null)));
    }
    if (v !== null && typeof v === 'object' && 'error' in v) {
      // The failure is reported when the process ends, with its exit code.
      this.errorDoc = v as ErrorDocument;
      return;
    }
    const ev = v as WatchEvent;
    if (ev.schemaVersion !== SCHEMA_VERSION) {
      return this.fail(
        new ProtocolError(
          `watch speaks schemaVersion ${String(ev.schemaVersion)}, this client ${SCHEMA_VERSION}`,
          this.details(null),
        ),
      );
    }
    if (!this.isReady) {
      this.preamble.push(ev);
      if (ev.type === 'ready') {
        this.isReady = true;
        this.readyResolve(this.preamble.splice(0));
      }
    }
    const w = this.waiters.shift();
    if (w) return w.resolve({ value: ev, done: false });
    this.queue.push(ev);
    if (this.queue.length >= HIGH_WATER && !this.paused) {
      this.paused = true;
      this.child.stdout!.pause();
    }
  }

  private resumeIfDrained() {
    if (this.paused && this.queue.length < HIGH_WATER / 2) {
      this.paused = false;
      this.child.stdout!.resume();
    }
  }

  private onClose(code: number | null) {
    this.clearTimers();
    if (this.closing) return;
    // The process ended by itself: with an error document, or an exit code other than 0.
    if (!this.failure && (this.errorDoc || code !== 0)) {
      this.failure = failureOf(this.errorDoc, { exitCode: code, stderr: this.stderr, args: this.args });
    }
    this.ended = true;
    this.settleWaiters();
  }

  /** Records a failure, ends the process, and hands the failure to the next `next()`. */
  private fail(f: AgentRelayError) {
    if (this.closing || this.ended || this.failure) return;
    this.failure = f;
    this.readyReject(f);
    this.clearTimers();
    void terminate(this.child).then(() => {
      this.ended = true;
      this.settleWaiters();
    });
  }

  private settleWaiters() {
    if (!this.isReady) {
      this.readyReject(this.failure ?? new AgentRelayError('watch ended before it was ready', this.details(null)));
    }
    for (const w of this.waiters.splice(0)) {
      if (this.failure) {
        const f = this.failure;
        this.failure = null;
        w.reject(f);
      } else {
        w.resolve({ value: undefined, done: true });
      }
    }
  }

  private clearTimers() {
    for (const t of this.timers.splice(0)) clearTimeout(t);
  }
}
