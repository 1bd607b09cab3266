// The client against the real binary and a real (private) user manager: run by `npm test`
// inside `agent-relay-systemd sandbox`, with the fake runner as the config's runnerCommand
// (scripts/test.sh). HOME is a temporary directory holding the config and projects/app.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  AbortError,
  AgentRelayClient,
  AmbiguousError,
  CallTimeoutError,
  ConflictError,
  InvalidError,
  ManagerUnreachableError,
  NotAdmittedError,
  NotFoundError,
  SpawnFailedError,
  SCHEMA_VERSION,
  TimeoutError,
  type SpawnRequest,
  type WatchEvent,
  type WatchStream,
} from '../src/index.js';

const home = process.env.HOME!;
const cwd = join(home, 'projects', 'app');
const client = new AgentRelayClient({ timeoutMs: 20_000 });

function request(id: string, extra: Partial<SpawnRequest> = {}): SpawnRequest {
  return { provider: 'claude', cwd, spawnRequestId: id, ...extra };
}

/** Whether a process with this pid still exists (a zombie of ours would: we reap our children). */
function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('against a private user manager', () => {
  before(() => {
    assert.ok(process.env.XDG_RUNTIME_DIR, 'run inside `agent-relay-systemd sandbox` (npm test does)');
  });

  test('spawn, watch sees the exit with its code, diagnose agrees', async () => {
    const stream = client.watch();
    try {
      const preamble = await stream.ready;
      const ready = preamble.at(-1)!;
      assert.equal(ready.type, 'ready');
      assert.equal(ready.agents, preamble.length - 1, 'agents counts the snapshot');
      const answer = await client.spawn(
        request('ts-exit', {
          lifecycle: 'ephemeral',
          env: { FAKE_RUNNER_EXIT_AFTER_MS: '300', FAKE_RUNNER_EXIT_CODE: '7' },
        }),
      );
      assert.equal(answer.created, true);
      assert.equal(answer.schemaVersion, SCHEMA_VERSION);
      let exited: WatchEvent | undefined;
      for await (const ev of stream) {
        if (ev.type === 'exited' && ev.unit === answer.agent.systemdUnit) {
          exited = ev;
          break; // return(): the watch process is killed
        }
      }
      assert.ok(exited?.exit, 'an exited event with its exit');
      assert.equal(exited.exit.kind, 'exited');
      assert.equal(exited.exit.exitCode, 7);
      const d = await client.diagnose('ts-exit');
      assert.equal(d.exit.kind, 'exited');
      assert.equal(d.exit.exitCode, 7);
      assert.equal(d.systemdUnit, answer.agent.systemdUnit);
      assert.equal(d.state, 'dead');
    } finally {
      await stream.close();
    }
    assert.ok(!exists(stream.pid!), 'the watch process is gone after the loop');
  });

  test('a missing agent is a NotFoundError with exit 3', async () => {
    await assert.rejects(client.show('nobody-at-all'), (e: unknown) => {
      assert.ok(e instanceof NotFoundError, String(e));
      assert.equal(e.kind, 'not-found');
      assert.equal(e.exitCode, 3);
      return true;
    });
    await assert.rejects(client.diagnose('nobody-at-all'), NotFoundError);
    await assert.rejects(client.stop('nobody-at-all'), NotFoundError);
  });

  test('a bad request is an InvalidError, an ambiguous reference an AmbiguousError', async () => {
    await assert.rejects(client.spawn({ provider: 'claude' } as SpawnRequest), InvalidError);
    await assert.rejects(client.show('--help'), NotFoundError, 'a reference is never an option');
    await client.spawn(request('ts-amb-1', { policyName: 'ts-twice' }));
    await client.spawn(request('ts-amb-2', { policyName: 'ts-twice' }));
    await assert.rejects(client.show('ts-twice'), (e: unknown) => {
      assert.ok(e instanceof AmbiguousError && e instanceof ConflictError, String(e));
      assert.equal(e.matches.length, 2);
      assert.equal(e.exitCode, 4);
      return true;
    });
    for (const id of ['ts-amb-1', 'ts-amb-2']) await client.stop(id, { timeoutStopSeconds: 5 });
  });

  test('every verb of a live agent, typed', async () => {
    const spawned = await client.spawn(request('ts-live'));
    const again = await client.spawn(request('ts-live'));
    assert.equal(again.created, false, 'one spawnRequestId is one agent');
    const unit = spawned.agent.systemdUnit;
    assert.ok((await client.list()).some((a) => a.systemdUnit === unit));
    assert.equal((await client.show('ts-live')).state, 'alive');
    const logs = await until('log lines', async () => {
      const l = await client.logs('ts-live', { lines: 10 });
      return l.lines.length > 0 ? l : undefined;
    });
    assert.ok(logs.lines.some((l) => l.includes('FAKE-RUNNER')), logs.lines.join('\n'));
    const k = await client.kill('ts-live', { killSignal: 'CONT', whom: 'main' });
    assert.equal(k.signal, 'SIGCONT');
    await until('runner info', async () => (await client.diagnose('ts-live')).runnerInfoPresent || undefined);
    const g = await client.guestCreate('ts-live');
    assert.ok((await client.guestList()).some((x) => x.guest === g.guest));
    const cap = await client.terminalCapture(g.guest);
    assert.equal(typeof cap.content, 'string');
    assert.equal((await client.terminalSend(g.guest, '-x\r')).guest, g.guest);
    const r = await client.terminalResize(g.guest, 80, 24);
    assert.deepEqual([r.kind, r.cols, r.rows], ['guest', 80, 24]);
    await assert.rejects(client.terminalResize(g.guest, 9, 24), InvalidError);
    assert.equal((await client.guestStop(g.guest)).stopped, true);
    const stop = await client.stop('ts-live', { timeoutStopSeconds: 5 });
    assert.deepEqual([stop.stopped, stop.wasRunning], [true, true]);
    const gen = await client.generate(request('ts-durable'));
    assert.match(gen.text, /\[Service\]/);
    const reap = await client.reap({ dryRun: true });
    assert.equal(reap.dryRun, true);
    const report = await client.doctor();
    assert.ok(report.findings.some((f) => f.check === 'manager' && f.status === 'ok'));
  });

  test('a deadline or an abort kills the process, and the call says which', async () => {
    // A stand-in binary that never answers: it says who it is, then sleeps.
    const script = join(home, 'hang.sh');
    writeFileSync(script, '#!/bin/sh\necho $$ > "$HOME/hang.pid"\nexec sleep 60\n', { mode: 0o755 });
    const hang = new AgentRelayClient({ bin: script, timeoutMs: 300 });
    const pidFile = join(home, 'hang.pid');
    const pidOf = () =>
      until('hang.pid', async () => {
        const t = existsSync(pidFile) ? readFileSync(pidFile, 'utf8') : '';
        return t.endsWith('\n') ? Number(t) : undefined;
      });
    const started = Date.now();
    await assert.rejects(
      hang.list(),
      (e: unknown) => e instanceof CallTimeoutError && e instanceof TimeoutError && e.exitCode === null,
    );
    assert.ok(Date.now() - started < 5_000, 'settled soon after the deadline');
    const pid = await pidOf();
    assert.ok(!exists(pid), `the process ${pid} is gone once the call settled`);
    rmSync(pidFile);

    const ac = new AbortController();
    const call = hang.list({ signal: ac.signal, timeoutMs: 10_000 });
    const abortedPid = await pidOf();
    ac.abort();
    await assert.rejects(call, AbortError);
    assert.ok(!exists(abortedPid), `the process ${abortedPid} is gone once the call settled`);
    await assert.rejects(hang.list({ signal: AbortSignal.abort() }), AbortError);
  });

  test("watch's return() kills its process, and close() ends a pending next()", async () => {
    const stream: WatchStream = client.watch();
    const preamble = await stream.ready;
    // The snapshot and `ready` come through the iterator too.
    for (const want of preamble) assert.deepEqual((await stream.next()).value, want);
    const pid = stream.pid!;
    assert.ok(exists(pid));
    const pending = stream.next(); // nothing happens: it waits
    await stream.return();
    assert.deepEqual(await pending, { value: undefined, done: true });
    assert.ok(!exists(pid), 'the watch process is gone');
    assert.deepEqual(await stream.next(), { value: undefined, done: true });

    const aborted = client.watch({ signal: AbortSignal.timeout(100) });
    await assert.rejects(
      (async () => {
        for await (const _ of aborted) {
          // snapshot and ready, then nothing until the signal
        }
      })(),
      AbortError,
    );
    await aborted.closed;
  });

  test('restart swaps generations; a failing successor keeps the predecessor; status counts', async () => {
    const first = await client.spawn(request('ts-swap-1'), { waitReady: true });
    const swapped = await client.restart('ts-swap-1', { spawnRequestId: 'ts-swap-2' });
    assert.equal(swapped.agent.agentId, first.agent.agentId);
    assert.equal(swapped.predecessorUnit, first.agent.systemdUnit);
    assert.equal(swapped.agent.spawnRequestId, 'ts-swap-2');
    await assert.rejects(
      client.restart('ts-swap-2', {
        request: request('ts-swap-3', { env: { FAKE_RUNNER_EXIT_AFTER_MS: '50', FAKE_RUNNER_EXIT_CODE: '3' } }),
      }),
      (e: unknown) => {
        assert.ok(e instanceof SpawnFailedError, String(e));
        assert.match(e.message, /keeps running/);
        return true;
      },
    );
    assert.equal((await client.show('ts-swap-2')).pid, swapped.agent.pid);
    const status = await client.status();
    assert.ok(status.alive >= 1 && status.queued === 0, JSON.stringify(status));
    await client.stop('ts-swap-2', { timeoutStopSeconds: 2 });
  });

  test('a spawn the memory gate refuses is a NotAdmittedError (noWait), nothing started', async () => {
    const env = { ...process.env, AGENT_RELAY_SPAWN_MIN_FREE_MEM_MB: String(1 << 30) };
    const gated = new AgentRelayClient({ env, timeoutMs: 20_000 });
    await assert.rejects(gated.spawn(request('ts-gated'), { noWait: true }), (e: unknown) => {
      assert.ok(e instanceof NotAdmittedError, String(e));
      assert.deepEqual([e.kind, e.exitCode], ['not-admitted', 9]);
      return true;
    });
    await assert.rejects(client.show('ts-gated'), NotFoundError);
  });

  test('no manager: ManagerUnreachableError from a call and from a watch', async () => {
    const nowhere = join(home, 'no-manager');
    mkdirSync(nowhere, { recursive: true, mode: 0o700 });
    const env = {
      PATH: process.env.PATH,
      HOME: home,
      XDG_RUNTIME_DIR: nowhere,
      AGENT_RELAY_ORCHESTRATOR_CONFIG: process.env.AGENT_RELAY_ORCHESTRATOR_CONFIG,
    };
    const lost = new AgentRelayClient({ env, timeoutMs: 20_000 });
    await assert.rejects(lost.list(), (e: unknown) => {
      assert.ok(e instanceof ManagerUnreachableError, String(e));
      assert.deepEqual([e.kind, e.exitCode], ['manager-unreachable', 5]);
      return true;
    });
    const stream = lost.watch();
    await assert.rejects(stream.ready, ManagerUnreachableError);
    await assert.rejects(stream.next(), ManagerUnreachableError);
    assert.deepEqual(await stream.next(), { value: undefined, done: true });
    const report = await lost.doctor();
    assert.equal(report.ok, false, 'a failed required check is a report, not an error');
  });

  after(async () => {
    // Nothing of ours keeps running: every agent stopped, every failed unit reset.
    for (const a of await client.list()) {
      if (a.alive) await client.stop(a.systemdUnit, { timeoutStopSeconds: 2 });
    }
  });
});
