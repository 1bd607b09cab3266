// Typed errors: the binary's JSON error document (`{"error":{kind,message,exitCode,matches?}}`)
// and exit code, mapped to classes a caller can `instanceof`; plus the client's own failures
// (its deadline, an abort, an answer it cannot read).
import type { ErrorDocument, ErrorKind } from './contract.js';

/** What every failure of a call carries. */
export interface FailureDetails {
  /** The error document's `kind`, or `null` when there was none (e.g. the client's deadline). */
  kind: ErrorKind | null;
  /** The process's exit code; `null` when it was killed (deadline, abort) or never ran. */
  exitCode: number | null;
  /** The process's stderr (the one-line reason, and logs). */
  stderr: string;
  /** The command line run, for messages. */
  args: readonly string[];
}

/** Any failure of a call. */
export class AgentRelayError extends Error {
  readonly kind: ErrorKind | null;
  readonly exitCode: number | null;
  readonly stderr: string;
  readonly args: readonly string[];

  constructor(message: string, details: FailureDetails, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.kind = details.kind;
    this.exitCode = details.exitCode;
    this.stderr = details.stderr;
    this.args = details.args;
  }
}

/** Exit 2, kind `invalid`: bad arguments, spawn request, config file or agent reference. */
export class InvalidError extends AgentRelayError {}
/** Exit 2, kind `not-running`: the verb needs a live agent (or guest). */
export class NotRunningError extends AgentRelayError {}
/** Exit 3, kind `not-found`: no such agent (or guest). */
export class NotFoundError extends AgentRelayError {}
/** Exit 4: kinds `conflict`, `ambiguous`, `not-ours`. */
export class ConflictError extends AgentRelayError {}
/** Exit 4, kind `ambiguous`: the reference fits several agents; `matches` lists their units. */
export class AmbiguousError extends ConflictError {
  readonly matches: readonly string[];
  constructor(message: string, details: FailureDetails, matches: readonly string[]) {
    super(message, details);
    this.matches = matches;
  }
}
/** Exit 4, kind `not-ours`: the unit is not one of this tool's. */
export class NotOursError extends ConflictError {}
/** Exit 5, kind `manager-unreachable`: no systemd user manager reachable. */
export class ManagerUnreachableError extends AgentRelayError {}
/** Exit 6, kind `timeout`: the user manager did not answer within `--timeout`. */
export class TimeoutError extends AgentRelayError {}
/** The client's own deadline (`timeoutMs`) passed: the process was killed. A `TimeoutError`. */
export class CallTimeoutError extends TimeoutError {}
/** Exit 7, kind `survived`: the agent survived SIGKILL. */
export class SurvivedError extends AgentRelayError {}
/** Exit 9, kind `not-admitted`: the admission gate let no spawn through in time (or at once with
 * `noWait`); nothing was started. */
export class NotAdmittedError extends AgentRelayError {}
/** Exit 1, kind `spawn-failed`: the runner could not be started. */
export class SpawnFailedError extends AgentRelayError {}
/** The call's `AbortSignal` fired: the process was killed. */
export class AbortError extends AgentRelayError {}
/** The binary's answer could not be read: not JSON, or another `schemaVersion` than this client's. */
export class ProtocolError extends AgentRelayError {}

/** The error of a finished process: from its JSON error document when it printed one, else from
 * its exit code (README "Exit codes"). */
export function failureOf(doc: ErrorDocument | null, details: Omit<FailureDetails, 'kind'>): AgentRelayError {
  const kind = doc?.error.kind ?? null;
  const exitCode = doc?.error.exitCode ?? details.exitCode;
  const message =
    doc?.error.message ??
    (details.stderr.trim().split('\n').pop() || `agent-relay-systemd exited with ${details.exitCode}`);
  const d: FailureDetails = { ...details, kind, exitCode };
  switch (kind) {
    case 'invalid':
      return new InvalidError(message, d);
    case 'not-running':
      return new NotRunningError(message, d);
    case 'not-found':
      return new NotFoundError(message, d);
    case 'conflict':
      return new ConflictError(message, d);
    case 'ambiguous':
      return new AmbiguousError(message, d, doc?.error.matches ?? []);
    case 'not-ours':
      return new NotOursError(message, d);
    case 'manager-unreachable':
      return new ManagerUnreachableError(message, d);
    case 'timeout':
      return new TimeoutError(message, d);
    case 'survived':
      return new SurvivedError(message, d);
    case 'spawn-failed':
      return new SpawnFailedError(message, d);
    case 'not-admitted':
      return new NotAdmittedError(message, d);
    case null:
      break;
    default:
      // io, systemd, tmux, internal, exec, sandbox (and kinds newer than this client).
      return new AgentRelayError(message, d);
  }
  switch (exitCode) {
    case 2:
      return new InvalidError(message, d);
    case 3:
      return new NotFoundError(message, d);
    case 4:
      return new ConflictError(message, d);
    case 5:
      return new ManagerUnreachableError(message, d);
    case 6:
      return new TimeoutError(message, d);
    case 7:
      return new SurvivedError(message, d);
    case 9:
      return new NotAdmittedError(message, d);
    default:
      return new AgentRelayError(message, d);
  }
}
