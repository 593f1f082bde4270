/**
 * Fine-grained permissions: every route, stream and MQTT session declares the one it needs
 * (api/access.ts, api/live/live.ts, broker/auth.ts). Roles are named sets of these, stored in the
 * database (core/access/roles.ts), so a new role needs no code.
 */
export const PERMISSIONS = {
  read: 'devices, device types, telemetry, latest values, attributes, connectivity, spatial queries, aggregates, trajectories, exports, geofences and their events, alarms, OTA packages and rollouts',
  live: 'live streams (socket.io) and platform events over MQTT (guanlink/events/#)',
  'alarms:ack': 'acknowledge and clear alarms',
  rpc: 'send RPC commands to devices and follow them',
  'attributes:write': "write and delete devices' shared attributes",
  'devices:write': 'register, change and delete devices and device types; credentials; import; release claimed devices',
  'devices:claim': 'claim a device that asked to be claimed, with its secret: the device then belongs to the owner of the credential (seen whatever its scope)',
  'geofences:write': 'create, change and delete geofences',
  'alarms:write': 'create, change and delete alarm rules',
  'ota:write': 'firmware and software updates: upload, download and delete packages, assign them to device types and devices, run and cancel campaigns (ThingsBoard: the tenant administrator)',
  'platform:admin': 'rollups, retention, provisioning keys',
  'keys:admin': 'API keys and roles',
  'audit:read': 'the audit log',
} as const;

export type Permission = keyof typeof PERMISSIONS;
export const PERMISSION_NAMES = Object.keys(PERMISSIONS) as Permission[];

export const isPermission = (name: string): name is Permission => Object.hasOwn(PERMISSIONS, name);

/** Roles every installation has; admins may add their own (and change these, except `admin`). */
export const BUILTIN_ROLES: Record<string, { description: string; permissions: readonly Permission[] }> = {
  admin: { description: 'everything, in any scope', permissions: PERMISSION_NAMES },
  operator: { description: 'city operations staff: read all in scope, live map, acknowledge alarms, RPC to devices in scope, claim devices', permissions: ['read', 'live', 'alarms:ack', 'rpc', 'devices:claim'] },
  agency: { description: 'an agency: read-only access to data in its scope, live streams included; claims its own devices', permissions: ['read', 'live', 'devices:claim'] },
};
