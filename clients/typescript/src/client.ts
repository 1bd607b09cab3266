// The client: one method per verb, each running the binary with `-o json` under a deadline,
// checking the answer's `schemaVersion`, and mapping failures to typed errors (errors.ts).
import type {
  AgentRecord,
  Capture,
  Diagnosis,
  DoctorReport,
  ErrorDocument,
  GenerateAnswer,
  GuestRecord,
  GuestStopAnswer,
  KillAnswer,
  LogsAnswer,
  ReapSummary,
  RemoveAnswer,
  ResizeAnswer,
  RestartAnswer,
  SendAnswer,
  SpawnAnswer,
  SpawnRequest,
  StatusAnswer,
  StopAnswer,
} from './contract.js';
import { SCHEMA_VERSION } from './contract.js';
import { ProtocolError, failureOf } from './errors.js';
import { run } from './process.js';
import { WatchStream, type WatchOptions } from './watch.js';

export interface ClientOptions {
  /** The binary: default `$AGENT_RELAY_SYSTEMD_BIN`, else `agent-relay-systemd` on PATH. */
  bin?: string;
  /** `--config`: the orchestrator config file (default: the binary's own lookup). */
  config?: string;
  /** Deadline of every call, in ms (default 30 000); the process is killed when it passes. */
  timeoutMs?: number;
  /** `--timeout`: the binary's bound on each call to the systemd manager, in seconds. */
  managerTimeoutSeconds?: number;
  /** The binary's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

export interface CallOptions {
  /** This call's deadline in ms, instead of the client's. */
  timeoutMs?: number;
  /** Kills the process and rejects with an `AbortError` when it fires. */
  signal?: AbortSignal;
}

export interface StopOptions extends CallOptions {
  /** `--timeout-stop`: seconds of grace before SIGKILL (0 or less: 10; at most 60). The call's
   * default deadline grows by this much. */
  timeoutStopSeconds?: number;
}

/** The binary's default for `--timeout-stop`. */
const DEFAULT_STOP_SECONDS = 10;

export class AgentRelayClient {
  readonly bin: string;
  readonly timeoutMs: number;
  private readonly options: ClientOptions;

  constructor(options: ClientOptions = {}) {
    this.options = options;
    this.bin = options.bin ?? process.env.AGENT_RELAY_SYSTEMD_BIN ?? 'agent-relay-systemd';
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** `spawn` (or `spawn --persist`): starts the agent of `request`, or answers its live agent.
   * It passes the admission gate first (queued while no slot or headroom is free; `noWait`: a
   * `NotAdmittedError` at once instead); `waitReady` answers once the runner has registered. */
  spawn(
    request: SpawnRequest,
    o: CallOptions & { persist?: boolean; noWait?: boolean; waitReady?: boolean; readyTimeoutSeconds?: number } = {},
  ): Promise<SpawnAnswer> {
    const args = ['spawn'];
    if (o.persist) args.push('--persist');
    if (o.noWait) args.push('--no-wait');
    if (o.waitReady) args.push('--wait-ready');
    if (o.waitReady && o.readyTimeoutSeconds !== undefined) args.push('--ready-timeout', String(o.readyTimeoutSeconds));
    return this.call(args, o, JSON.stringify(request));
  }

  /** `restart`: a transactional swap; the successor (from `request`, else the agent's own) must
   * register and settle before the predecessor stops, or it is stopped and the predecessor kept
   * (a `SpawnFailedError` saying why). */
  restart(
    agent: string,
    o: CallOptions & {
      request?: SpawnRequest;
      spawnRequestId?: string;
      registrationTimeoutSeconds?: number;
      settleMs?: number;
      timeoutStopSeconds?: number;
    } = {},
  ): Promise<RestartAnswer> {
    const args = ['restart'];
    if (o.request) args.push('--spec', '-');
    if (o.spawnRequestId !== undefined) args.push('--spawn-request-id', o.spawnRequestId);
    if (o.registrationTimeoutSeconds !== undefined) args.push('--registration-timeout', String(o.registrationTimeoutSeconds));
    if (o.settleMs !== undefined) args.push('--settle-ms', String(o.settleMs));
    if (o.timeoutStopSeconds !== undefined) args.push('--timeout-stop', String(o.timeoutStopSeconds));
    args.push('--', agent);
    return this.call(args, o, o.request ? JSON.stringify(o.request) : undefined);
  }

  /** `status`: agents by state, queued spawns, exited agents on record, manager and reaper timer. */
  status(o: CallOptions = {}): Promise<StatusAnswer> {
    return this.call(['status'], o);
  }

  /** `wait`: blocks until the agent has ended, then answers as `diagnose` (a `TimeoutError` when
   * `timeoutWaitSeconds` pass first). */
  wait(agent: string, o: CallOptions & { timeoutWaitSeconds?: number } = {}): Promise<Diagnosis> {
    const args = ['wait'];
    if (o.timeoutWaitSeconds !== undefined) args.push('--timeout-wait', String(o.timeoutWaitSeconds));
    args.push('--', agent);
    return this.call(args, o);
  }

  /** `generate`: the unit file `spawn --persist` would write; changes nothing. */
  generate(request: SpawnRequest, o: CallOptions = {}): Promise<GenerateAnswer> {
    return this.call(['generate'], o, JSON.stringify(request));
  }

  /** `list`: every agent, and spawns queued for admission (`state: 'queued'`); `all` adds agents
   * whose unit is gone, from their exit records; `state` keeps those in these states. */
  list(o: CallOptions & { all?: boolean; state?: string[] } = {}): Promise<AgentRecord[]> {
    const args = ['list', ...(o.all ? ['--all'] : [])];
    for (const st of o.state ?? []) args.push('--state', st);
    return this.call(args, o);
  }

  /** `show`: one agent by unit, session, agent id, spawn request id or policy name. */
  show(agent: string, o: CallOptions = {}): Promise<AgentRecord> {
    return this.call(['show', '--', agent], o);
  }

  /** `stop`: SIGTERM, then after `timeoutStopSeconds` SIGKILL to the whole control group. */
  stop(agent: string, o: StopOptions = {}): Promise<StopAnswer> {
    return this.call(['stop', ...stopArgs(o), '--', agent], withStopDeadline(o, this.timeoutMs));
  }

  /** `start`: starts a stopped durable agent again (`created` false when it already ran). */
  start(agent: string, o: CallOptions = {}): Promise<SpawnAnswer> {
    return this.call(['start', '--', agent], o);
  }

  /** `remove`: a stop, and for a durable agent its unit file and secrets deleted. */
  remove(agent: string, o: StopOptions = {}): Promise<RemoveAnswer> {
    return this.call(['remove', ...stopArgs(o), '--', agent], withStopDeadline(o, this.timeoutMs));
  }

  /** `kill`: `killSignal` (a name like `TERM`, `INT`, `HUP` or a number; default TERM) to the
   * runner (`whom: 'main'`) or its whole control group (`'all'`, the default). */
  kill(agent: string, o: CallOptions & { killSignal?: string; whom?: 'main' | 'all' } = {}): Promise<KillAnswer> {
    const args = ['kill', '--signal', o.killSignal ?? 'TERM', '--whom', o.whom ?? 'all', '--', agent];
    return this.call(args, o);
  }

  /** `diagnose`: how the agent ended (or is doing), also after its unit was collected. */
  diagnose(agent: string, o: CallOptions = {}): Promise<Diagnosis> {
    return this.call(['diagnose', '--', agent], o);
  }

  /** `logs`: the log's last `lines` (1-1000, default 100), sanitised unless `raw`. */
  logs(agent: string, o: CallOptions & { lines?: number; raw?: boolean } = {}): Promise<LogsAnswer> {
    const args = ['logs', '-n', String(o.lines ?? 100), ...(o.raw ? ['--raw'] : []), '--', agent];
    return this.call(args, o);
  }

  /** `guest create`: a guest terminal of a live agent. */
  guestCreate(agent: string, o: CallOptions = {}): Promise<GuestRecord> {
    return this.call(['guest', 'create', '--', agent], o);
  }

  /** `guest list`: every guest terminal. */
  guestList(o: CallOptions = {}): Promise<GuestRecord[]> {
    return this.call(['guest', 'list'], o);
  }

  /** `guest stop`: ends a guest terminal (guest names only). */
  guestStop(guest: string, o: CallOptions = {}): Promise<GuestStopAnswer> {
    return this.call(['guest', 'stop', '--', guest], o);
  }

  /** `terminal capture`: the pane of a guest (by its name) or of an agent's own tmux session (any
   * agent reference), read consistently with its cursor; `running: false` when the pane is gone. */
  terminalCapture(target: string, o: CallOptions = {}): Promise<Capture> {
    return this.call(['terminal', 'capture', '--', target], o);
  }

  /** `terminal send`: types `text` into a guest or an agent's own session (through stdin, never
   * the command line); at most 4096 UTF-16 code units (`text.length`), other control characters
   * dropped. */
  terminalSend(target: string, text: string, o: CallOptions = {}): Promise<SendAnswer> {
    return this.call(['terminal', 'send', '--', target, '-'], o, text);
  }

  /** `terminal resize`: `cols` 10-500, `rows` 5-200 (else an `InvalidError`, nothing resized). */
  terminalResize(target: string, cols: number, rows: number, o: CallOptions = {}): Promise<ResizeAnswer> {
    const args = ['terminal', 'resize', '--cols', String(cols), '--rows', String(rows), '--', target];
    return this.call(args, o);
  }

  /** `reap`: removes leftovers of gone agents (with `dryRun`, says what it would do). */
  reap(o: CallOptions & { dryRun?: boolean; retentionDays?: number } = {}): Promise<ReapSummary> {
    const args = ['reap', ...(o.dryRun ? ['--dry-run'] : [])];
    if (o.retentionDays !== undefined) args.push('--retention-days', String(o.retentionDays));
    return this.call(args, o);
  }

  /** `doctor`: every finding. A failed required check is `ok: false` in the report (the binary
   * exits 5, 6 or 8), not an error. */
  doctor(o: CallOptions = {}): Promise<DoctorReport> {
    return this.call(['doctor'], o, undefined, [5, 6, 8]);
  }

  /** `watch`: the event stream, from a snapshot of every agent (`snapshot`… then `ready`). */
  watch(o: WatchOptions = {}): WatchStream {
    const args = [...this.globalArgs(), 'watch', ...(o.queue !== undefined ? ['--queue', String(o.queue)] : [])];
    return new WatchStream(
      { bin: this.bin, args, env: this.options.env },
      { ...o, readyTimeoutMs: o.readyTimeoutMs ?? this.timeoutMs },
    );
  }

  private globalArgs(): string[] {
    const g = ['-o', 'json'];
    if (this.options.config !== undefined) g.push('--config', this.options.config);
    if (this.options.managerTimeoutSeconds !== undefined) g.push('--timeout', String(this.options.managerTimeoutSeconds));
    return g;
  }

  /** Runs one verb and reads its answer (exit 0, or one of `okCodes` with an answer). */
  private async call<T>(verb: string[], o: CallOptions, stdin?: string, okCodes: number[] = []): Promise<T> {
    const args = [...this.globalArgs(), ...verb];
    const r = await run({
      bin: this.bin,
      args,
      env: this.options.env,
      stdin,
      timeoutMs: o.timeoutMs ?? this.timeoutMs,
      signal: o.signal,
    });
    const details = { exitCode: r.exitCode, stderr: r.stderr, args };
    let doc: unknown = null;
    const text = r.stdout.trim();
    if (text !== '') {
      try {
        doc = JSON.parse(text);
      } catch {
        if (r.exitCode === 0) {
          throw new ProtocolError(`the answer is not JSON: ${text.slice(0, 200)}`, { ...details, kind: null });
        }
      }
    }
    const isError = doc !== null && typeof doc === 'object' && !Array.isArray(doc) && 'error' in doc;
    if (r.exitCode !== 0 && (isError || !okCodes.includes(r.exitCode ?? -1) || doc === null)) {
      throw failureOf(isError ? (doc as ErrorDocument) : null, details);
    }
    if (doc === null || isError) {
      throw new ProtocolError('exit 0 without an answer', { ...details, kind: null });
    }
    checkVersion(doc, details);
    return doc as T;
  }
}

function stopArgs(o: StopOptions): string[] {
  return o.timeoutStopSeconds === undefined ? [] : ['--timeout-stop', String(o.timeoutStopSeconds)];
}

/** A stop's deadline: the client's plus the grace it asked for (plus SIGKILL's 2 s). */
function withStopDeadline(o: StopOptions, base: number): CallOptions {
  const grace = o.timeoutStopSeconds && o.timeoutStopSeconds > 0 ? Math.min(o.timeoutStopSeconds, 60) : DEFAULT_STOP_SECONDS;
  return { ...o, timeoutMs: o.timeoutMs ?? base + (grace + 2) * 1000 };
}

/** Every answer (each element of a list) must speak this client's contract version. */
function checkVersion(doc: unknown, details: { exitCode: number | null; stderr: string; args: string[] }) {
  const docs = Array.isArray(doc) ? doc : [doc];
  for (const d of docs) {
    const v = (d as { schemaVersion?: unknown } | null)?.schemaVersion;
    if (v !== SCHEMA_VERSION) {
      throw new ProtocolError(
        `agent-relay-systemd answered with schemaVersion ${String(v)}; this client speaks ${SCHEMA_VERSION}`,
        { ...details, kind: null },
      );
    }
  }
}
