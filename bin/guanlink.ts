#!/usr/bin/env node
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, settings } from '../core/config.ts';
import { raiseDescriptorLimit, type DescriptorLimits } from '../core/descriptors.ts';
import { createLogger } from '../core/log.ts';
import { startPlatform } from '../platform.ts';
import { startFleet, type Fleet } from '../simulators/fleet.ts';

const USAGE = `guanlink — GuanLink (莞联) IoT and spatio-temporal operations backend

Usage: npm start [-- --no-simulators]

Options:
  --no-simulators   do not run the simulated Dongguan fleets
  -h, --help        this text

Configuration (environment variables):
${Object.values(settings)
  .map((s) => `  ${s.env.padEnd(22)} ${s.description}${s.default === undefined ? '' : ` [${String(s.default)}]`}`)
  .join('\n')}
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { 'no-simulators': { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const config = loadConfig(process.env);
  if (values['no-simulators']) config.simulators = false;
  const log = createLogger(config.logLevel);
  // The open-file limit bounds the connections GuanLink can hold (README "Connection budget"): the
  // soft limit raised to the hard limit where allowed, before anything is opened.
  const limits = await raiseDescriptorLimit();
  const show = (l: DescriptorLimits | undefined) => (l ? { soft: String(l.soft), hard: String(l.hard) } : 'unknown');
  log.info({ before: show(limits.before), after: show(limits.after) }, `open-file limit: ${limits.note}`);
  const platform = await startPlatform(config, log);

  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const httpUrl = `http://${host}:${platform.httpPort}`;
  // Never the admin key itself: this output ends up in terminals' scrollback, shell logs and
  // journald. It says where the key is and how to get in without printing it.
  const keyFile = path.resolve(config.dataDir, 'admin-key');
  const fromEnv = config.adminKey !== undefined;
  const bearer = fromEnv ? '$GUANLINK_ADMIN_KEY' : `$(cat '${keyFile.replaceAll("'", `'\\''`)}')`;
  process.stdout.write(
    [
      '',
      `  GuanLink (莞联) is running on ${platform.dialect.kind}${platform.embeddedDatabase ? ' (embedded, data in ' + config.dataDir + ')' : ''}`,
      `  Live map      ${httpUrl}/   (paste an API key, or the admin key, into its sign-in panel)`,
      `  REST API      ${httpUrl}/api/v1   (docs: ${httpUrl}/docs, OpenAPI: ${httpUrl}/api/v1/openapi.json)`,
      `  MQTT          mqtt://${host}:${platform.mqttPort}   ws://${host}:${platform.httpPort}/mqtt`,
      fromEnv ? '  Admin key     from GUANLINK_ADMIN_KEY (not printed)' : `  Admin key     in ${keyFile} (mode 0600; not printed)`,
      `  Staff keys    POST ${httpUrl}/api/v1/keys with the admin key, e.g.`,
      `                curl -H "Authorization: Bearer ${bearer}" -H 'content-type: application/json' \\`,
      `                  -d '{"name":"duty desk","owner":"operations","roles":["operator"]}' ${httpUrl}/api/v1/keys`,
      '',
      '',
    ].join('\n'),
  );

  let fleet: Fleet | undefined;
  if (config.simulators) {
    fleet = await startFleet({
      httpUrl: `http://127.0.0.1:${platform.httpPort}`,
      mqttUrl: `mqtt://127.0.0.1:${platform.mqttPort}`,
      adminKey: platform.adminKey,
      seed: config.simSeed,
      devicesPerType: config.simDevicesPerType,
      intervalMs: config.simIntervalMs,
      stateFile: `${config.dataDir}/simulators.json`,
      log: log.child({ module: 'simulators' }),
    });
  }

  let signals = 0;
  const shutdown = (signal: string) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    log.info({ signal }, 'signal received');
    void (async () => {
      await fleet?.stop();
      await platform.stop();
      process.exit(0);
    })().catch((err: unknown) => {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`guanlink: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`guanlink: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
