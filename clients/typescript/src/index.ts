// agent-relay-systemd's typed client: the generated contract types, the client, its errors.
export * from './contract.js';
export { AgentRelayClient, type CallOptions, type ClientOptions, type StopOptions } from './client.js';
export { WatchStream, type WatchOptions } from './watch.js';
export {
  AbortError,
  AgentRelayError,
  AmbiguousError,
  CallTimeoutError,
  ConflictError,
  InvalidError,
  ManagerUnreachableError,
  NotAdmittedError,
  NotFoundError,
  NotOursError,
  NotRunningError,
  ProtocolError,
  SpawnFailedError,
  SurvivedError,
  TimeoutError,
  failureOf,
  type FailureDetails,
} from './errors.js';
