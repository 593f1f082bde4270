import { freePort } from '../../core/free-port.ts';
import { waitReady } from '../../test/support/process.ts';
import { spawnNode, type Child } from './children.ts';
import type { SimDevice } from '../../simulators/plan.ts';

export interface GuanlinkUnderTest {
  child: Child;
  httpUrl: string;
  mqttPort: number;
  adminKey: string;
}

/**
 * GuanLink as an operator runs it (`bin/guanlink.ts --no-simulators`), in its own process, on the
 * benchmark's database. `profileFile` enables the SIGUSR2 CPU-profile window (child-hooks.ts).
 */
export async function startGuanlink(o: { databaseUrl: string; dataDir: string; adminKey: string; logFile: string; profileFile?: string; env?: NodeJS.ProcessEnv }): Promise<GuanlinkUnderTest> {
  const [httpPort, mqttPort] = [await freePort(), await freePort()];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: o.databaseUrl,
    DATA_DIR: o.dataDir,
    HOST: '127.0.0.1',
    HTTP_PORT: String(httpPort),
    MQTT_PORT: String(mqttPort),
    GUANLINK_ADMIN_KEY: o.adminKey,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
    BENCH_PROFILE_FILE: o.profileFile,
    ...o.env,
  };
  if (!o.profileFile) delete env.BENCH_PROFILE_FILE;
  // Extra Node/V8 flags for the platform only, for experiments (e.g. --max-semi-space-size=64).
  const nodeArgs = (process.env.BENCH_GUANLINK_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = await spawnNode('guanlink', 'bin/guanlink.ts', ['--no-simulators'], { env, logFile: o.logFile, nodeArgs });
  const httpUrl = `http://127.0.0.1:${httpPort}`;
  await waitReady({
    child: child.proc,
    httpUrl,
    mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
    httpPort,
    mqttPort,
    output: () => `(see ${o.logFile})`,
    exited: child.exited,
  });
  return { child, httpUrl, mqttPort, adminKey: o.adminKey };
}

/** Registers the devices through the REST API (as an operator would); returns their ids and access tokens, in order. */
export async function registerDevices(g: GuanlinkUnderTest, devices: readonly SimDevice[], concurrency = 8): Promise<{ id: number; accessToken: string }[]> {
  const out: { id: number; accessToken: string }[] = new Array(devices.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < devices.length; i = next++) {
      const sim = devices[i]!;
      const res = await fetch(`${g.httpUrl}/api/v1/devices`, {
        method: 'POST',
        headers: { authorization: `Bearer ${g.adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: sim.name, type: sim.type, ...(sim.location ? { location: sim.location } : {}) }),
      });
      const body = (await res.json()) as { id: number; accessToken: string };
      if (res.status !== 201) throw new Error(`registering ${sim.name}: ${res.status} ${JSON.stringify(body)}`);
      out[i] = { id: body.id, accessToken: body.accessToken };
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}
