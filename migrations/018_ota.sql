-- Firmware and software updates (OTA), as ThingsBoard does them (core/ota/): packages, their
-- assignment to device types and devices, rollouts to sets of devices at a rate (campaigns), and
-- what each device reports of its update (fw_state / sw_state telemetry).

-- A package: ThingsBoard's OtaPackage (title, version, type FIRMWARE/SOFTWARE, checksum). Its data
-- is uploaded once, after it is created; size and checksum are set then (NULL until uploaded).
CREATE TABLE ota_packages (
  id                 integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  type               text NOT NULL CHECK (type IN ('FIRMWARE', 'SOFTWARE')),
  title              text NOT NULL,
  version            text NOT NULL,
  device_type        text REFERENCES device_types (name) ON DELETE SET NULL,  -- only for devices of this type; NULL: any
  checksum_algorithm text NOT NULL,
  checksum           text,                                   -- lower-case hex; given at creation or computed on upload
  file_name          text NOT NULL,
  content_type       text NOT NULL,
  size               bigint,                                 -- bytes; NULL until the data is uploaded
  block_bytes        integer NOT NULL,                       -- size of each stored block but the last
  created_at         timestamptz NOT NULL DEFAULT now(),
  uploaded_at        timestamptz,
  UNIQUE (type, title, version)
);

-- The data, in fixed-size blocks (any byte range is read without loading the whole). Written in
-- the upload's transaction: a refused upload (checksum mismatch, too large, cut off) leaves none.
CREATE TABLE ota_package_blocks (
  package_id integer NOT NULL REFERENCES ota_packages (id) ON DELETE CASCADE,
  n          integer NOT NULL,
  data       bytea NOT NULL,
  PRIMARY KEY (package_id, n)
);
ALTER TABLE ota_package_blocks ALTER COLUMN data SET STORAGE EXTERNAL; -- already compressed, mostly: no TOAST compression

-- Assignments. A device's own assignment overrides its type's (ThingsBoard: device, then device profile).
CREATE TABLE ota_type_assignments (
  device_type text NOT NULL REFERENCES device_types (name) ON DELETE CASCADE,
  type        text NOT NULL CHECK (type IN ('FIRMWARE', 'SOFTWARE')),
  package_id  integer NOT NULL REFERENCES ota_packages (id),
  assigned_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_type, type)
);
CREATE TABLE ota_device_assignments (
  device_id   integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  type        text NOT NULL CHECK (type IN ('FIRMWARE', 'SOFTWARE')),
  package_id  integer NOT NULL REFERENCES ota_packages (id),
  assigned_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, type)
);
CREATE INDEX ota_device_assignments_package ON ota_device_assignments (package_id);

-- What a device reported of its update: fw_state (sw_state), current_fw_title/version, fw_error.
-- package_id: the package targeted when it reported (NULL when none was assigned).
CREATE TABLE ota_device_states (
  device_id       integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  type            text NOT NULL CHECK (type IN ('FIRMWARE', 'SOFTWARE')),
  package_id      integer REFERENCES ota_packages (id) ON DELETE SET NULL,
  state           text,
  current_title   text,
  current_version text,
  error           text,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, type)
);
CREATE INDEX ota_device_states_package ON ota_device_states (package_id);

-- A rollout of one package to a set of devices, N per minute; the devices still to assign are
-- kept here, so a restart (or another node) carries on where it stopped.
CREATE TABLE ota_campaigns (
  id                 integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  package_id         integer NOT NULL REFERENCES ota_packages (id),
  devices_per_minute integer NOT NULL CHECK (devices_per_minute > 0),
  status             text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'cancelled')),
  created_by         text NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  started_at         timestamptz NOT NULL DEFAULT now(),
  finished_at        timestamptz
);
CREATE INDEX ota_campaigns_running ON ota_campaigns (id) WHERE status = 'running';
CREATE TABLE ota_campaign_devices (
  campaign_id integer NOT NULL REFERENCES ota_campaigns (id) ON DELETE CASCADE,
  device_id   integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  seq         integer NOT NULL,                         -- rollout order
  assigned_at timestamptz,                              -- NULL: still waiting for its turn
  PRIMARY KEY (campaign_id, device_id)
);
CREATE INDEX ota_campaign_devices_waiting ON ota_campaign_devices (campaign_id, seq) WHERE assigned_at IS NULL;
